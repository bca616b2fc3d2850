"""Instance decoding: cell masks from the confidence, centre and offset maps (paper Eq. 4)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import label as _skimage_label

DEFAULT_CENTER_THRESHOLD = 0.5
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_NMS_SIZE = 3
DEFAULT_MIN_AREA = 15


def find_centers(center: np.ndarray, *, threshold: float = DEFAULT_CENTER_THRESHOLD, nms_size: int = DEFAULT_NMS_SIZE):
    """Cell centres: local maxima of the centre map at or above ``threshold``.

    Non-maximum suppression by a ``nms_size x nms_size`` max filter (the max-pool trick of
    Panoptic-DeepLab). A flat-topped peak gives several equal maxima side by side; each 8-connected
    group of maxima counts as one centre, placed at the group's mean position, so a plateau does not
    split a cell in two.

    Parameters
    ----------
    center
        Centre probabilities ``(H, W)`` in [0, 1].
    threshold
        Minimum peak height.
    nms_size
        Side of the suppression window in pixels (odd).

    Returns
    -------
    ``(K, 2)`` float64 ``(row, col)`` centre coordinates.
    """
    center = np.asarray(center, dtype=np.float32)
    if nms_size < 1:
        raise ValueError(f"nms_size must be >= 1, got {nms_size}.")
    peaks = (center >= threshold) & (center == ndimage.maximum_filter(center, size=nms_size, mode="constant"))
    groups, n = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 2))
    rows, cols = np.nonzero(groups)
    g = groups[rows, cols] - 1
    counts = np.bincount(g, minlength=n)
    return np.stack([np.bincount(g, rows, n) / counts, np.bincount(g, cols, n) / counts], axis=1)


def _pieces_per_label(labels: np.ndarray) -> np.ndarray:
    """Label the 4-connected pieces of every cell, never joining two different cells.

    Equivalent to running :func:`scipy.ndimage.label` once per cell, without the per-cell loop: on
    a grid of twice the resolution, pixels sit at even positions and the odd positions between
    two 4-neighbours are set only when both carry the same label, so one labelling of that grid
    never joins different cells.

    Returns the piece image ``(H, W)`` (0 = background) and the number of pieces.
    """
    h, w = labels.shape
    up = np.zeros((2 * h - 1, 2 * w - 1), dtype=bool)
    fg = labels > 0
    up[::2, ::2] = fg
    up[1::2, ::2] = fg[1:] & (labels[1:] == labels[:-1])
    up[::2, 1::2] = fg[:, 1:] & (labels[:, 1:] == labels[:, :-1])
    comp, n = ndimage.label(up)
    return comp[::2, ::2], n


def clean_labels(labels: np.ndarray, *, min_area: int = DEFAULT_MIN_AREA, fill_holes: bool = True) -> np.ndarray:
    """Post-process instance labels: one piece per cell, holes filled, small cells removed, ids 1..n.

    Steps, all vectorised over cells:

    1. keep the largest 4-connected piece of every cell (a cell cannot be in two places);
    2. fill holes: a background region not touching the image border whose only neighbouring cell
       is one cell becomes part of that cell;
    3. drop cells smaller than ``min_area`` pixels;
    4. relabel consecutively ``1..n`` in order of first appearance in raster order (row-major).

    Parameters
    ----------
    labels
        Integer instance labels ``(H, W)``, 0 = background.
    min_area
        Minimum cell area in pixels.
    fill_holes
        Fill enclosed holes (step 2).

    Returns
    -------
    int32 label image.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}.")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        labels = np.where(labels > 0, labels, 0)  # negative ids are background, as they always were here
    if not labels.any():
        return np.zeros(labels.shape, dtype=np.int32)

    # Everything per cell is decided on small per-piece / per-region tables and the image is read
    # through lookups: no whole-image sort (np.unique) and no int64 copy of the labels.
    #
    # 1. largest piece per cell. The pieces are numbered in raster order of their first pixel (as
    # scipy's and skimage's labelling do), which makes that numbering the order of step 4 too.
    pieces, n = _skimage_label(labels, connectivity=1, background=0, return_num=True)
    size = np.bincount(pieces.ravel(), minlength=n + 1)
    lab_of_piece = np.zeros(n + 1, dtype=labels.dtype)
    lab_of_piece[pieces] = labels  # every pixel of a piece writes the same value
    order = np.lexsort((-size[1:], lab_of_piece[1:])) + 1  # by label, largest piece first
    first = np.ones(order.size, dtype=bool)
    first[1:] = lab_of_piece[order[1:]] != lab_of_piece[order[:-1]]
    keep = np.zeros(n + 1, dtype=bool)
    keep[order[first]] = True
    kept = np.flatnonzero(keep)
    # cells 1..k in piece order, i.e. by first appearance (a filled hole never precedes its cell)
    cell_of_piece = np.zeros(n + 1, dtype=np.int32)
    cell_of_piece[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    area = np.zeros(kept.size + 1, dtype=np.int64)
    area[1:] = size[kept]

    # 2. fill holes enclosed by a single cell
    hole_pixels = hole_cells = None
    if fill_holes:
        bg, nb = ndimage.label(~keep[pieces])
        candidate = np.ones(nb + 1, dtype=bool)
        candidate[0] = False
        candidate[np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])] = False
        if candidate.any():
            # only the pixels of regions away from the border (usually few), so their 4 neighbours
            # are inside the image
            idx = np.flatnonzero(candidate[bg])
            region = bg.ravel()[idx]
            w = labels.shape[1]
            cells = cell_of_piece[pieces.ravel()[idx[:, None] + np.array([-w, w, -1, 1])]]
            stride = np.int64(kept.size + 1)
            pairs = np.unique((region[:, None] * stride + cells)[cells > 0])  # distinct (region, cell)
            region_of_pair, cell_of_pair = np.divmod(pairs, stride)
            n_neigh = np.bincount(region_of_pair, minlength=nb + 1)
            fill_with = np.zeros(nb + 1, dtype=np.int32)
            fill_with[region_of_pair] = cell_of_pair
            fillable = candidate & (n_neigh == 1)
            filled = fillable[region]
            hole_pixels, hole_cells = idx[filled], fill_with[region[filled]]
            area += np.bincount(hole_cells, minlength=area.size)

    # 3. small cells, 4. relabel 1..n in the order above, so ids are stable and reproducible
    survive = area >= min_area
    survive[0] = False
    new = np.zeros(area.size, dtype=np.int32)
    new[survive] = np.arange(1, np.count_nonzero(survive) + 1, dtype=np.int32)
    out = new[cell_of_piece][pieces]
    if hole_pixels is not None:
        out.ravel()[hole_pixels] = new[hole_cells]
    return out


def decode_instances(
    mask_prob: np.ndarray,
    center_prob: np.ndarray,
    offsets: np.ndarray,
    *,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    center_threshold: float = DEFAULT_CENTER_THRESHOLD,
    nms_size: int = DEFAULT_NMS_SIZE,
    min_area: int = DEFAULT_MIN_AREA,
    fill_holes: bool = True,
) -> np.ndarray:
    """Group foreground pixels into cells (paper Eq. 4) and clean the result.

    Centres ``o_k`` are the local maxima of the centre map (:func:`find_centers`); every pixel ``p``
    with ``M(p) >= mask_threshold`` goes to the centre nearest to ``p + V(p)`` (one KD-tree query
    for all pixels); then :func:`clean_labels` keeps one piece per cell, fills holes and drops
    cells under ``min_area`` px.

    Parameters
    ----------
    mask_prob
        Confidence map ``M`` ``(H, W)``, probabilities.
    center_prob
        Centre map ``C`` ``(H, W)``, probabilities.
    offsets
        Offset map ``V`` ``(2, H, W)`` in pixels, order ``(dy, dx)``.
    mask_threshold, center_threshold
        Thresholds on ``M`` and on centre peaks (0.5 in the paper).
    nms_size
        Side of the non-maximum-suppression window for centres.
    min_area
        Minimum cell area in pixels.
    fill_holes
        Fill holes enclosed by a single cell.

    Returns
    -------
    int32 instance labels ``(H, W)``, ``0`` background, cells ``1..n``.
    """
    mask_prob = np.asarray(mask_prob)
    h, w = mask_prob.shape
    if center_prob.shape != (h, w) or offsets.shape != (2, h, w):
        raise ValueError(
            f"Shapes disagree: mask {mask_prob.shape}, centre {center_prob.shape}, offsets {offsets.shape} "
            "(expected (H, W), (H, W), (2, H, W))."
        )
    labels = np.zeros((h, w), dtype=np.int32)
    centers = find_centers(center_prob, threshold=center_threshold, nms_size=nms_size)
    rows, cols = np.nonzero(mask_prob >= mask_threshold)
    if centers.shape[0] == 0 or rows.size == 0:
        return labels
    target = np.stack([rows + offsets[0, rows, cols], cols + offsets[1, rows, cols]], axis=1)
    _, k = cKDTree(centers).query(target, k=1)
    labels[rows, cols] = k + 1
    return clean_labels(labels, min_area=min_area, fill_holes=fill_holes)
