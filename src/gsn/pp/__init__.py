"""Preprocessing: image normalisation, the RNA location map, and the watershed baseline."""

from ._normalize import normalize, normalize_array, percentiles
from ._rna_map import rna_location_map, rna_location_map_array
from ._watershed import watershed, watershed_array

__all__ = [
    "normalize",
    "normalize_array",
    "percentiles",
    "rna_location_map",
    "rna_location_map_array",
    "watershed",
    "watershed_array",
]
