"""Plotting: segmentation overlays, Fig. 2-style metric panels and training history."""

from ._segmentation import segmentation

__all__ = ["segmentation"]
