"""Training targets (M, C, V) from an instance label image (paper Eqs. 10-12)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFAULT_CENTER_SIGMA = 2.0
"""Standard deviation (pixels) of the Gaussian peak rendered at each cell centre."""


class Targets(NamedTuple):
    """Per-pixel training targets for one label image of shape ``(H, W)``.

    Attributes
    ----------
    mask
        ``M``: 1 inside cells, 0 elsewhere, float32 ``(H, W)`` (Eq. 10).
    center
        ``C``: a Gaussian peak of height 1 at every cell centre, float32 ``(H, W)`` (Eq. 11).
    offsets
        ``V``: float32 ``(2, H, W)``, channel order ``(dy, dx)``, in pixels; ``V(p) = o - p`` on
        cell pixels (so ``p + V(p) = o``) and 0 on background (Eq. 12, sign corrected).
    """

    mask: np.ndarray
    center: np.ndarray
    offsets: np.ndarray


def cell_centers(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of every cell: the per-axis median of its pixel coordinates (paper Eq. 11).

    Vectorised over cells: one stable sort of the pixels by (label, coordinate) per axis, then the
    median is read at each label's middle position.

    Parameters
    ----------
    labels
        Integer instance labels ``(H, W)``, 0 = background.

    Returns
    -------
    ids
        Sorted label values present in ``labels`` (background excluded), ``(K,)``.
    centers
        ``(K, 2)`` float64 ``(row, col)`` medians; a half-integer where a cell has an even number
        of pixels along an axis.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}.")
    rows, cols = np.nonzero(labels)
    if rows.size == 0:
        return np.zeros(0, dtype=labels.dtype), np.zeros((0, 2))
    lab = labels[rows, cols]
    ids, counts = np.unique(lab, return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = start + (counts - 1) // 2
    hi = start + counts // 2
    centers = np.empty((ids.size, 2))
    for axis, coord in enumerate((rows, cols)):
        order = np.lexsort((coord, lab))  # by label, then by coordinate
        sorted_coord = coord[order]
        centers[:, axis] = 0.5 * (sorted_coord[lo] + sorted_coord[hi])
    return ids, centers


def make_targets(labels: np.ndarray, *, sigma: float = DEFAULT_CENTER_SIGMA) -> Targets:
    """Build the confidence, centre and offset targets of one instance label image.

    Two deliberate departures from the paper, as in Panoptic-DeepLab:

    - the centre target is a Gaussian peak (``sigma`` px, height 1) instead of a single pixel,
      because a one-pixel target under an L2 loss is almost all background and the network learns
      to predict zeros;
    - the offset is ``V(p) = o - p`` so that ``p + V(p) = o``, which is how Eq. 4 uses it; the
      paper's Eq. 12 writes ``p - o``.

    The centre ``o`` is rounded to the nearest pixel (half-integers up), so the peak has height
    exactly 1 on the pixel grid and the offsets point at that same pixel. Overlapping peaks of
    neighbouring cells combine by maximum, so every peak keeps height 1.

    Parameters
    ----------
    labels
        Integer instance labels ``(H, W)``, 0 = background; ids need not be consecutive.
    sigma
        Standard deviation of the centre peaks in pixels.

    Returns
    -------
    :class:`Targets` (float32 arrays).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got {labels.dtype}.")
    h, w = labels.shape
    fg = labels > 0
    mask = fg.astype(np.float32)
    center = np.zeros((h, w), dtype=np.float32)
    offsets = np.zeros((2, h, w), dtype=np.float32)
    ids, centers = cell_centers(labels)
    if ids.size == 0:
        return Targets(mask, center, offsets)
    o = np.floor(centers + 0.5).astype(np.int64)

    # Offsets: look every cell pixel's centre up by its label's position in `ids`.
    rows, cols = np.nonzero(fg)
    k = np.searchsorted(ids, labels[rows, cols])
    offsets[0, rows, cols] = o[k, 0] - rows
    offsets[1, rows, cols] = o[k, 1] - cols

    # Centre peaks: one (2r+1)^2 stamp per cell, scattered with a running maximum.
    r = max(1, int(np.ceil(3 * sigma)))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    stamp = np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2)).astype(np.float32).ravel()
    yy = (o[:, 0, None] + dy.ravel()[None, :]).ravel()
    xx = (o[:, 1, None] + dx.ravel()[None, :]).ravel()
    vals = np.broadcast_to(stamp, (ids.size, stamp.size)).ravel()
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    np.maximum.at(center, (yy[inside], xx[inside]), vals[inside])
    return Targets(mask, center, offsets)


def make_targets_batch(labels: np.ndarray, *, sigma: float = DEFAULT_CENTER_SIGMA) -> Targets:
    """:func:`make_targets` for a stack of label images ``(B, H, W)``; arrays gain a batch axis."""
    out = [make_targets(lab, sigma=sigma) for lab in labels]
    return Targets(*(np.stack(parts) for parts in zip(*out, strict=True)))
