"""Tools: transcript assignment, aggregation to AnnData, segmentation, training and metrics."""

from ._assign import assign_transcripts, lookup_labels
from ._boundaries import labels_to_polygons
from ._cells import aggregate, cells_from_labels, write_segmentation
from ._refine import refine_labels

__all__ = [
    "aggregate",
    "assign_transcripts",
    "cells_from_labels",
    "labels_to_polygons",
    "lookup_labels",
    "refine_labels",
    "write_segmentation",
]
