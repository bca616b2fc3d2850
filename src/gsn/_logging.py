"""The ``gsn`` logger; users configure it with the standard :mod:`logging` module."""

from __future__ import annotations

import logging

logger = logging.getLogger("gsn")
