"""The ``gsn`` logger, with a default handler so that its messages reach a user who configured nothing.

Messages go through :mod:`logging` as usual: a user who configured logging (a root handler, as
pytest, notebooks with ``logging.basicConfig`` or applications do) gets them there, once. Without
any root handler, gsn's own handler prints them to stderr as ``gsn WARNING: ...``; how much is
shown is :attr:`gsn.settings.verbosity`.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("gsn")

VERBOSITY_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


class _DefaultHandler(logging.StreamHandler):
    """Prints gsn's records to stderr only when the root logger has no handler (else they propagate there)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        self.stream = sys.stderr  # the current stderr (Jupyter and pytest replace it)
        super().emit(record)


def _install_default_handler() -> None:
    if not any(isinstance(h, _DefaultHandler) for h in logger.handlers):
        logger.addHandler(_DefaultHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


_install_default_handler()
