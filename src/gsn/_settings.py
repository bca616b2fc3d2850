"""Global settings (device, progress bars), in the spirit of ``scanpy.settings``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """Package-wide defaults.

    Attributes
    ----------
    progress
        Show tqdm progress bars for long loops.
    device
        Default torch device for training and inference: ``"auto"`` picks CUDA, then MPS, then CPU.
    """

    progress: bool = True
    device: str = "auto"


settings = Settings()
