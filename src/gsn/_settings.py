"""Global settings (device, progress bars, verbosity), in the spirit of ``scanpy.settings``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ._logging import VERBOSITY_LEVELS, logger


@dataclass
class Settings:
    """Package-wide defaults.

    Attributes
    ----------
    progress
        Show tqdm progress bars for long loops.
    device
        Default torch device for training and inference: ``"auto"`` picks CUDA, then MPS, then CPU.
    verbosity
        How much of the ``gsn`` logger is shown: ``"error"``, ``"warning"`` (default), ``"info"``
        or ``"debug"`` (or 0-3, as in scanpy). It sets the level of ``logging.getLogger("gsn")``,
        which prints to stderr when logging is not configured and otherwise propagates to the
        root logger's handlers.
    """

    progress: bool = True
    device: str = "auto"

    @property
    def verbosity(self) -> str:
        """Level of the ``gsn`` logger, by name (see the class docstring)."""
        names = {v: k for k, v in VERBOSITY_LEVELS.items()}
        return names.get(logger.getEffectiveLevel(), logging.getLevelName(logger.getEffectiveLevel()).lower())

    @verbosity.setter
    def verbosity(self, value: str | int) -> None:
        order = list(VERBOSITY_LEVELS)  # error, warning, info, debug: scanpy's 0-3
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"`verbosity` must be one of {order} or 0-3, got {value!r}.")
        if isinstance(value, int):
            if not 0 <= value < len(order):
                raise ValueError(f"`verbosity` must be 0-3 (0 = errors only, 3 = debug), got {value}.")
            value = order[value]
        if value.lower() not in VERBOSITY_LEVELS:
            raise ValueError(f"`verbosity` must be one of {order}, got {value!r}.")
        logger.setLevel(VERBOSITY_LEVELS[value.lower()])


settings = Settings()
