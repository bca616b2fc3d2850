"""gsn.settings.verbosity and the gsn logger's default handler."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import gsn
from gsn._logging import logger


@pytest.fixture
def restore_level():
    level = logger.level
    yield
    logger.setLevel(level)


def test_verbosity_names_and_numbers(restore_level):
    assert gsn.settings.verbosity == "warning"  # the default
    gsn.settings.verbosity = "info"
    assert logger.level == logging.INFO and gsn.settings.verbosity == "info"
    gsn.settings.verbosity = 0
    assert gsn.settings.verbosity == "error"
    gsn.settings.verbosity = 3
    assert logger.level == logging.DEBUG
    for bad in ("loud", 4, -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="verbosity"):
            gsn.settings.verbosity = bad


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_messages_reach_a_user_who_configured_nothing():
    run = _child("import gsn; from gsn._logging import logger; logger.info('hidden'); logger.warning('seen'); "
                 "gsn.settings.verbosity = 'info'; logger.info('now seen')")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "gsn WARNING: seen" in run.stderr and "gsn INFO: now seen" in run.stderr
    assert "hidden" not in run.stderr


def test_no_duplicates_when_logging_is_configured():
    run = _child("import logging; logging.basicConfig(format='root %(message)s'); import gsn; "
                 "from gsn._logging import logger; logger.warning('once')")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("once") == 1 and "root once" in run.stderr
