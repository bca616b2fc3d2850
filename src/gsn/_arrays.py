"""Small vectorised helpers on integer label arrays."""

from __future__ import annotations

import numpy as np

# Ids up to this many times the number of values (or this absolute bound) are indexed by a lookup table
# (counting, O(n)); beyond, by sorting.
_TABLE_FACTOR = 8
_TABLE_MIN = 1 << 22


def compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted distinct values of a non-negative integer array and each value's position among them.

    ``np.unique(values, return_inverse=True)`` without the sort when the ids are bounded by the array
    size (label ids are): a whole-window sort was most of the time of the per-block kernels.
    """
    values = np.asarray(values)
    if values.size == 0:
        return values.astype(np.int64).ravel(), np.zeros(values.shape, np.int64)
    top = int(values.max())
    if values.dtype.kind in "iu" and int(values.min()) >= 0 and top < max(_TABLE_FACTOR * values.size, _TABLE_MIN):
        seen = np.zeros(top + 1, dtype=bool)
        seen[values.ravel()] = True
        ids = np.flatnonzero(seen)
        lut = np.zeros(top + 1, dtype=np.int32 if len(ids) < 2**31 else np.int64)
        lut[ids] = np.arange(len(ids))
        return ids.astype(np.int64), lut[values]
    ids, inverse = np.unique(values, return_inverse=True)
    return ids.astype(np.int64), inverse.reshape(values.shape)
