"""Tools: transcript assignment, aggregation to AnnData, segmentation, training and metrics."""

from ._assign import assign_transcripts, lookup_labels
from ._boundaries import labels_to_polygons
from ._cells import aggregate, cells_from_labels, write_segmentation
from ._compare import compare
from ._correlation import correlation_reproducibility, gene_correlation
from ._grow import grow_cells
from ._metrics import cell_calling, genes_per_cell, morphology, pixel_coverage, rna_coverage
from ._metrics_truth import match_truth
from ._purity import expansion_curve, marker_genes, mecr, purity
from ._refine import refine_labels
from ._segment import segment
from ._train import train

__all__ = [
    "aggregate",
    "assign_transcripts",
    "cell_calling",
    "cells_from_labels",
    "compare",
    "correlation_reproducibility",
    "expansion_curve",
    "gene_correlation",
    "genes_per_cell",
    "grow_cells",
    "marker_genes",
    "match_truth",
    "mecr",
    "purity",
    "morphology",
    "pixel_coverage",
    "rna_coverage",
    "segment",
    "train",
    "labels_to_polygons",
    "lookup_labels",
    "refine_labels",
    "write_segmentation",
]
