"""Plotting: segmentation overlays, Fig. 2-style metric panels and training history."""

from ._history import training_history
from ._metrics import (
    cell_calling,
    compare,
    correlation_reproducibility,
    genes_per_cell,
    key_colors,
    morphology,
    pixel_coverage,
    rna_coverage,
)
from ._purity import purity
from ._segmentation import segmentation

__all__ = [
    "cell_calling",
    "compare",
    "correlation_reproducibility",
    "genes_per_cell",
    "key_colors",
    "morphology",
    "pixel_coverage",
    "purity",
    "rna_coverage",
    "segmentation",
    "training_history",
]
