"""Global settings (device, precision, threads, progress bars, verbosity), in the spirit of ``scanpy.settings``."""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

from ._logging import VERBOSITY_LEVELS, logger

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""Accepted values of ``precision`` (:attr:`Settings.precision`, :class:`gsn.models.TileRunner`)."""


def check_precision(value, name: str = "precision") -> str:
    """Return ``value`` as one of :data:`PRECISIONS` (lower case), or raise a ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value.lower() not in PRECISIONS:
        raise ValueError(f"`{name}` must be one of {list(PRECISIONS)}, got {value!r}.")
    return value.lower()


def check_count(value, name: str) -> int | None:
    """Return ``value`` if it is ``None`` or a positive integer, else raise an error naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer or None (chosen by gsn), got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}.")
    return int(value)


@dataclass
class Settings:
    """Package-wide defaults.

    Attributes
    ----------
    progress
        Show tqdm progress bars for long loops.
    device
        Default torch device for training and inference: ``"auto"`` picks CUDA, then MPS, then CPU.
    precision
        Arithmetic of inference (:class:`gsn.models.TileRunner`): ``"auto"`` (default: bf16 on a CPU
        with native bf16 instructions, fp16 on CUDA, else fp32), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    threads
        Torch threads for inference on the CPU. ``None`` (default): the runner times its own calls
        and uses either all the CPUs this process may use (at most torch's own setting) or one,
        whichever is faster at the moment; on a machine busy with other jobs, threads waiting for
        each other were up to 10x slower than one.
    compile
        Run the inference network through :func:`torch.compile` (off by default: the compilation
        takes minutes on a small CPU; see docs/model.md, "CPU speed").
    max_batch
        Tiles per forward pass of the inference network; a larger batch (``batch_size`` of
        :func:`gsn.models.predict_maps`) is split into passes of this many. ``None`` (default): on a
        CPU two 256 px tiles' worth of pixels (measured faster than 8 tiles, which no longer fit in
        the caches), elsewhere the whole batch.
    scratch_dir
        Folder for the temporary files of whole-slide steps (rasters and transcripts larger than a
        few dozen MB, removed at the end of each call). ``None`` (default): the system's temporary
        folder. Point it at a fast local disk with room for about 40 bytes per image pixel.
    """

    progress: bool = True
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    compile: bool = False
    max_batch: int | None = None
    scratch_dir: str | None = None

    def __setattr__(self, name: str, value) -> None:
        # Checked on every assignment (and by the dataclass __init__), so a typo fails where it is made.
        if name == "precision":
            value = check_precision(value)
        elif name in ("threads", "max_batch"):
            value = check_count(value, name)
        elif name == "compile" and not isinstance(value, bool):
            raise TypeError(f"`compile` must be True or False, got {value!r}.")
        elif name == "scratch_dir" and value is not None:
            import os

            if not isinstance(value, str | os.PathLike) or not os.path.isdir(value):
                raise ValueError(f"`scratch_dir` must be an existing folder or None, got {value!r}.")
            value = os.fspath(value)
        super().__setattr__(name, value)

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
