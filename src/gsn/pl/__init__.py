"""Plotting: segmentation overlays, Fig. 2-style metric panels and training history."""

__all__: list[str] = []
