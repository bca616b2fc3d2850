"""Pure array functions behind gsn's segmentation metrics (no SpatialData in here).

Every function takes plain arrays: an integer label image ``(y, x)`` with 0 for background, the
transcripts' pixel coordinates ``x`` (column) and ``y`` (row) in that image's frame (a molecule lies
in pixel ``(floor(y), floor(x))``), a 2D image, or a cells x genes count matrix. They are vectorised:
whole-image passes, :func:`numpy.bincount`, run-length encoding and sparse matrices; nothing loops
over pixels or over cells in Python. The SpatialData wrappers in :mod:`gsn.tl._metrics` only find the
arrays and call these.

Definitions follow the GeneSegNet paper ("Evaluation Metrics", Wang et al. 2023); where the paper
leaves a choice open the docstring says which one is made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

SQRT2 = float(np.sqrt(2.0))
_MAX_HIST_RANGE = 1 << 24  # integer images with a smaller value range are binned through a histogram
DEFAULT_DELTAS = (3, 5, 7)
DEFAULT_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
# Label ids are used as array indices (np.bincount, lookup tables), so ids far above the number of
# pixels would allocate gigabytes for a handful of cells.
MIN_MAX_LABEL_ID = 1 << 24


def as_labels(labels, *, name: str = "Label image", allow_mask: bool = True, large_ids: bool = False) -> np.ndarray:
    """Validate a label image once, at the boundary: 2D, integer ids, 0 background, cells positive.

    Parameters
    ----------
    labels
        The label image ``(y, x)``.
    name
        How the error messages name it (e.g. ``"Labels 'prior_labels'"``).
    allow_mask
        Accept a boolean mask as the label image of one cell (the array metrics do); otherwise a
        boolean image is an error, since it is a foreground mask rather than cell instances.
    large_ids
        Accept ids above ``max(number of pixels, 2**24)`` (callers that renumber the cells anyway);
        by default they are an error, since ids index arrays and would allocate that many entries.

    Returns
    -------
    The labels as a non-negative integer array (uint64 becomes int64; a mask becomes int32).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected a 2D label image (y, x), got shape {labels.shape}.")
    if labels.dtype.kind == "b":
        if allow_mask:
            return labels.astype(np.int32)
        raise TypeError(
            f"{name}: labels are a boolean mask; label every cell with its own positive integer id "
            "(e.g. `scipy.ndimage.label(mask)[0]`)."
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: labels must be integers (cell ids), got {labels.dtype}; if the values are whole numbers, "
            "cast them with `labels.astype(np.int32)`."
        )
    if not labels.size:
        return labels
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise ValueError(
            f"{name}: labels have negative values (min {int(labels.min())}); 0 must be background and cells "
            "positive ids."
        )
    top = int(labels.max())
    if not large_ids and top > max(labels.size, MIN_MAX_LABEL_ID):
        raise ValueError(
            f"{name}: the largest cell id is {top}, far above the number of pixels ({labels.size}); gsn indexes cells "
            "by id, so renumber them first, e.g. `skimage.segmentation.relabel_sequential(labels)[0]`."
        )
    if labels.dtype == np.uint64:  # np.bincount refuses uint64
        if top >= 2**63:
            raise ValueError(f"{name}: label ids must be below 2**63.")
        labels = labels.astype(np.int64)
    return labels


def pixel_index(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and the in-image mask of points ``(x, y)``: pixel ``(floor(y), floor(x))``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.shape} vs {y.shape}).")
    rows = np.floor(y)
    cols = np.floor(x)
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows[inside].astype(np.int64), cols[inside].astype(np.int64), inside


def label_at(labels: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Label under each point (0 for background and for points outside the image)."""
    rows, cols, inside = pixel_index(x, y, labels.shape)
    out = np.zeros(len(inside), dtype=np.int64)
    out[inside] = labels[rows, cols]
    return out


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Cell pixels with a 4-neighbour outside their cell (another cell, background or beyond the image)."""
    labels = as_labels(labels)
    b = np.zeros(labels.shape, dtype=bool)
    d = labels[1:, :] != labels[:-1, :]
    b[1:, :] |= d
    b[:-1, :] |= d
    d = labels[:, 1:] != labels[:, :-1]
    b[:, 1:] |= d
    b[:, :-1] |= d
    del d
    b[0, :] = True
    b[-1, :] = True
    b[:, 0] = True
    b[:, -1] = True
    b &= labels > 0
    return b


def _row_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of the cells along rows: label, row, first and last column of each run."""
    h, w = labels.shape
    padded = np.zeros((h, w + 1), dtype=labels.dtype)  # a 0 column ends every row's last run
    padded[:, :w] = labels
    flat = padded.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]]) - 1
    values = flat[starts]
    keep = values > 0
    starts, ends, values = starts[keep], ends[keep], values[keep]
    rows, x0 = np.divmod(starts, w + 1)
    return values.astype(np.int64), rows.astype(np.int64), x0.astype(np.int64), (ends % (w + 1)).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# cell calling
# --------------------------------------------------------------------------------------------------
def distance_to_cells(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, max_distance: float) -> np.ndarray:
    """Euclidean distance from pixels ``(rows, cols)`` to the nearest cell pixel, exact up to ``max_distance``.

    Distances are between pixel centres; a pixel inside a cell has distance 0. Distances beyond
    ``max_distance`` are returned as ``inf``. For a background pixel the nearest cell pixel is always a
    boundary pixel of that cell, so this is the paper's ``D(g)``, the distance to the nearest
    cell-boundary pixel.

    The distance transform is separable: ``g``, the distance to the nearest cell pixel in the same
    column (capped at ``floor(max_distance) + 1``), comes from ``floor(max_distance)`` vertical
    dilations; then ``D^2 = min_dc dc^2 + g(row, col + dc)^2`` over ``|dc| <= max_distance`` is
    evaluated only at the requested pixels.
    """
    labels = as_labels(labels)
    h, w = labels.shape
    m = int(np.floor(max_distance))
    cap = m + 1
    if cap > 255:
        raise ValueError(f"`max_distance` must be below 255 pixels, got {max_distance}.")
    fg = labels > 0
    # g = number of d in 0..m for which no cell pixel lies within d rows: the capped vertical distance
    near = fg.copy()
    g = (~near).view(np.uint8).copy()
    for d in range(1, m + 1):
        near[:-d] |= fg[d:]
        near[d:] |= fg[:-d]
        g += ~near
    del near, fg
    gp = np.full((h, w + 2 * m), cap, dtype=np.uint8)
    gp[:, m : m + w] = g
    del g
    flat = gp.ravel()
    base = np.asarray(rows, dtype=np.int64) * (w + 2 * m) + np.asarray(cols, dtype=np.int64) + m
    squares = np.arange(cap + 1, dtype=np.int32) ** 2
    d2 = np.full(len(base), cap * cap, dtype=np.int32)
    for dc in range(-m, m + 1):
        np.minimum(d2, squares[flat[base + dc]] + dc * dc, out=d2)
    d = np.sqrt(d2.astype(np.float64))
    d[d > max_distance] = np.inf
    return d


def cell_calling_from_labels(
    labels: np.ndarray, x: np.ndarray, y: np.ndarray, *, deltas: Sequence[float] = DEFAULT_DELTAS
) -> pd.DataFrame:
    """Cell calling score ``|g_in| / |g_out(delta)|`` of the GeneSegNet paper.

    ``g_in``: transcripts on a cell pixel. ``g_out(delta)``: transcripts on background whose distance
    ``D`` to the nearest cell-boundary pixel is at most ``delta`` (pixel-centre distances, so a
    molecule in a pixel next to a cell has ``D = 1``). Transcripts outside the image are ignored.

    Parameters
    ----------
    labels
        Label image ``(y, x)``, 0 = background.
    x, y
        Transcript coordinates in pixels of ``labels``.
    deltas
        Distance thresholds in pixels (paper: 3, 5, 7).

    Returns
    -------
    DataFrame with one row per delta: ``delta``, ``n_in``, ``n_out``, ``cell_calling`` (``inf`` when no
    transcript lies near a cell from outside, ``NaN`` when there is none at all).
    """
    labels = as_labels(labels)
    deltas = check_deltas(deltas)
    rows, cols, _ = pixel_index(x, y, labels.shape)
    on_cell = labels[rows, cols] > 0
    dist = distance_to_cells(labels, rows[~on_cell], cols[~on_cell], max(deltas)) if labels.any() else np.zeros(0)
    return calling_table(int(on_cell.sum()), dist, deltas)


def check_deltas(deltas: Sequence[float]) -> list[float]:
    """Cell-calling distances as floats, refused when empty, negative or beyond :func:`distance_to_cells`' reach."""
    deltas = [float(d) for d in deltas]
    if not deltas or min(deltas) < 0:
        raise ValueError(f"`deltas` must be non-negative distances in pixels, got {deltas}.")
    if int(np.floor(max(deltas))) + 1 > 255:
        raise ValueError(f"`max_distance` must be below 255 pixels, got {max(deltas)}.")
    return deltas


def calling_table(n_in: int, dist: np.ndarray, deltas: Sequence[float]) -> pd.DataFrame:
    """Cell-calling rows from the transcripts on cells and the distances of the others (``inf``: far)."""
    records = []
    for delta in deltas:
        n_out = int(np.count_nonzero(dist <= delta))
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.float64(n_in) / np.float64(n_out)
        records.append({"delta": delta, "n_in": n_in, "n_out": n_out, "cell_calling": float(score)})
    return pd.DataFrame.from_records(records, columns=["delta", "n_in", "n_out", "cell_calling"])


# --------------------------------------------------------------------------------------------------
# morphology
# --------------------------------------------------------------------------------------------------
_HALF_DIAG = SQRT2 / 2


def _marching_squares_lut() -> np.ndarray:
    """Contour length inside one 2x2 window for each pattern of a cell's corners (bit j = corner j).

    Corners: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. The iso-line at 0.5 joins the
    midpoints of the window's edges; diagonal pairs are two separate corner cuts.
    """
    lut = np.zeros(16)
    for pattern in range(16):
        bits = [(pattern >> j) & 1 for j in range(4)]
        n = sum(bits)
        if n in (1, 3):
            lut[pattern] = _HALF_DIAG
        elif n == 2:
            diagonal = (bits[0] and bits[3]) or (bits[1] and bits[2])
            lut[pattern] = 2 * _HALF_DIAG if diagonal else 1.0
    return lut


_MS_LUT = _marching_squares_lut()


def contour_perimeter(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Length of every cell's outline (marching squares at 0.5 on the cell's mask), indexed by label.

    The outline joins the midpoints between each boundary pixel centre and its outside 4-neighbours,
    as :func:`skimage.measure.find_contours` would trace it: a ``w x h`` rectangle gets
    ``2 (w - 1) + 2 (h - 1) + 2 sqrt(2)``, a single pixel ``2 sqrt(2)``. Holes add their own outline.
    """
    labels = as_labels(labels)
    n = int(labels.max()) + 1 if n is None else n
    p = np.pad(labels, 1)
    c0, c1, c2, c3 = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    iy, ix = np.nonzero((c0 != c1) | (c0 != c2) | (c0 != c3))
    corners = [p[iy, ix], p[iy, ix + 1], p[iy + 1, ix], p[iy + 1, ix + 1]]
    del iy, ix
    out = np.zeros(n)
    for k in range(4):
        lk = corners[k]
        first = lk > 0
        for j in range(k):
            first &= corners[j] != lk
        pattern = np.zeros(len(lk), dtype=np.int8)
        for j in range(4):
            pattern |= (corners[j] == lk).astype(np.int8) << j
        out += np.bincount(lk[first], weights=_MS_LUT[pattern[first]], minlength=n)
    return out


def _hull_perimeter_from_runs(
    values: np.ndarray, rows: np.ndarray, x0: np.ndarray, x1: np.ndarray, n: int
) -> np.ndarray:
    """Exact perimeter of the convex hull of every cell's pixel centres, indexed by label.

    Only the leftmost and rightmost pixel of each (cell, row) can be hull vertices. They form, per
    cell, a y-monotone polygon (right ends top to bottom, then left ends bottom to top); all its
    reflex and straight vertices are dropped at once, repeatedly, with exact integer cross products,
    until every cell's polygon is convex. Hull vertices are never dropped (a vertex extreme in some
    direction is always a strict left turn of this polygon), so the result is the hull. Each pass is
    vectorised over all unfinished cells; a few dozen passes finish 100k cells.
    """
    out = np.zeros(n)
    if len(values) == 0:
        return out
    order = np.argsort(values, kind="stable")  # runs come in raster order: now (label, row, x)
    values, rows, x0, x1 = values[order], rows[order], x0[order], x1[order]
    new_group = np.r_[True, (values[1:] != values[:-1]) | (rows[1:] != rows[:-1])]
    gfirst = np.flatnonzero(new_group)
    glast = np.r_[gfirst[1:], len(values)] - 1
    glab, gy, gxmin, gxmax = values[gfirst], rows[gfirst], x0[gfirst], x1[glast]
    del values, rows, x0, x1, order, new_group
    # per cell (compact index) the groups (rows) are contiguous and sorted by y
    new_cell = np.r_[True, glab[1:] != glab[:-1]]
    cstart = np.flatnonzero(new_cell)
    ccount = np.diff(np.r_[cstart, len(glab)])
    cell_label = glab[cstart]
    cid = np.repeat(np.arange(len(cstart)), ccount)
    pos = np.arange(len(glab)) - cstart[cid]
    k = ccount[cid]
    single = gxmin == gxmax
    drop_bottom = single[cstart + ccount - 1]  # left end of the bottom row duplicates the right end
    drop_top = single[cstart] & (ccount > 1)  # left end of the top row duplicates the first vertex
    nvert = 2 * ccount - drop_bottom - drop_top
    off = np.r_[0, np.cumsum(nvert)[:-1]]
    keep_left = ~((pos == k - 1) & drop_bottom[cid]) & ~((pos == 0) & drop_top[cid])
    total = int(nvert.sum())
    vx = np.empty(total, dtype=np.int64)
    vy = np.empty(total, dtype=np.int64)
    vc = np.empty(total, dtype=np.int64)
    right = off[cid] + pos
    left = (off[cid] + k + (k - 1 - pos) - drop_bottom[cid])[keep_left]
    vx[right], vy[right], vc[right] = gxmax, gy, cid
    vx[left], vy[left], vc[left] = gxmin[keep_left], gy[keep_left], cid[keep_left]
    del glab, gy, gxmin, gxmax, cid, pos, k, right, left, keep_left
    ncell = len(cstart)
    per_cell = np.zeros(ncell)
    while len(vx):
        counts = np.bincount(vc, minlength=ncell)
        starts = np.cumsum(counts) - counts
        i = np.arange(len(vx))
        cnt = counts[vc]
        p = i - starts[vc]
        prev = np.where(p == 0, i + cnt - 1, i - 1)
        nxt = np.where(p == cnt - 1, i - cnt + 1, i + 1)
        ax, ay = vx - vx[prev], vy - vy[prev]
        bx, by = vx[nxt] - vx, vy[nxt] - vy
        cross = ax * by - ay * bx
        dot = ax * bx + ay * by
        remove = (cross < 0) | ((cross == 0) & (dot > 0)) | ((ax == 0) & (ay == 0) & (cnt > 1))
        active = np.bincount(vc[remove], minlength=ncell) > 0
        done = ~active[vc]
        per_cell += np.bincount(vc[done], weights=np.hypot(ax[done], ay[done]), minlength=ncell)
        keep = ~remove & ~done
        vx, vy, vc = vx[keep], vy[keep], vc[keep]
    out[cell_label] = per_cell
    return out


def convex_hull_perimeter(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Perimeter of each cell's convex hull, on the same outline as :func:`contour_perimeter`.

    The outline's vertices are the pixel centres moved half a pixel along an axis, so its hull is
    the hull of the pixel centres grown by a diamond of radius 1/2, whose perimeter adds
    ``2 sqrt(2)`` (Minkowski sum of convex sets). A convex digital shape thus has convexity 1.
    """
    labels = as_labels(labels)
    n = int(labels.max()) + 1 if n is None else n
    hull = _hull_perimeter_from_runs(*_row_runs(labels), n)
    present = np.bincount(labels.ravel(), minlength=n) > 0 if labels.size else np.zeros(n, bool)
    return np.where(present, hull + 2 * SQRT2, 0.0)


def morphology_from_labels(labels: np.ndarray) -> pd.DataFrame:
    """Area, perimeter, convex perimeter, elongation and convexity of every cell.

    - ``area``: number of pixels (paper: "Cell area").
    - ``perimeter``: length of the cell outline ``r_cell`` (:func:`contour_perimeter`).
    - ``convex_perimeter``: perimeter ``r_convex`` of the convex hull of that outline
      (:func:`convex_hull_perimeter`).
    - ``convexity``: ``r_convex / r_cell`` (paper: "Cell convexity"); 1 for convex cells, lower for
      ragged or concave ones. Cells in several pieces can exceed 1.
    - ``elongation``: ``e_b / e_a``, the smaller over the larger eigenvalue of the covariance of
      the cell's boundary pixel coordinates (paper: "Cell elongation"); 1 for a disk, 0 for a line.
      ``NaN`` for a single pixel.

    Parameters
    ----------
    labels
        Label image ``(y, x)``, 0 = background.

    Returns
    -------
    DataFrame indexed by cell id (label value), for the labels present in the image, sorted.
    """
    labels = as_labels(labels)
    n = int(labels.max()) + 1 if labels.size else 1
    runs = _row_runs(labels)
    values, rows, x0, x1 = runs
    area = np.bincount(values, weights=x1 - x0 + 1, minlength=n)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    perimeter = contour_perimeter(labels, n)
    hull = _hull_perimeter_from_runs(*runs, n) + 2 * SQRT2
    del runs, values, rows, x0, x1
    # elongation from the covariance of boundary pixel coordinates (pixel centres, ddof = 0)
    by, bx = np.nonzero(boundary_mask(labels))
    bl = labels[by, bx].astype(np.int64)
    cnt = np.bincount(bl, minlength=n).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = np.bincount(bl, weights=bx, minlength=n) / cnt
        my = np.bincount(bl, weights=by, minlength=n) / cnt
        dx = bx - mx[bl]
        dy = by - my[bl]
        sxx = np.bincount(bl, weights=dx * dx, minlength=n) / cnt
        syy = np.bincount(bl, weights=dy * dy, minlength=n) / cnt
        sxy = np.bincount(bl, weights=dx * dy, minlength=n) / cnt
        half_trace = (sxx + syy) / 2
        root = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
        e_a = half_trace + root
        e_b = np.maximum(half_trace - root, 0.0)
        elongation = np.where(e_a > 0, e_b / e_a, np.nan)
        convexity = hull / perimeter
    return pd.DataFrame(
        {
            "area": area[ids].astype(np.int64),
            "perimeter": perimeter[ids],
            "convex_perimeter": hull[ids],
            "elongation": elongation[ids],
            "convexity": convexity[ids],
        },
        index=pd.Index(ids.astype(np.int64), name="cell_id"),
    )


# --------------------------------------------------------------------------------------------------
# coverage by pixel value (Fig. 2d, 2e)
# --------------------------------------------------------------------------------------------------
def _use_histogram(values: np.ndarray) -> bool:
    """Integer values over a modest range are binned fastest through a histogram of all values."""
    if values.dtype.kind not in "iub" or values.size <= 4096:
        return False
    if values.dtype.itemsize <= 2:
        return True
    return int(values.max()) - int(values.min()) < _MAX_HIST_RANGE


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges that split ``values`` into ``n_bins`` groups of (nearly) equal size.

    Bins are half-open, ``[e_i, e_i+1)``. Edge ``i`` is the ``ceil(i N / n_bins)``-th smallest value
    (0-based), so each bin holds about ``N / n_bins`` values. The first edge is the minimum; the last
    lies just above the maximum (maximum + 1 for integers). Repeated edges (ties, e.g. a dark
    background of zeros) are merged, so there can be fewer bins than asked for.
    """
    values = np.asarray(values).ravel()
    if n_bins < 1:
        raise ValueError(f"`bins` must be at least 1, got {n_bins}.")
    if values.size == 0:
        return np.zeros(0)
    if _use_histogram(values):
        lo = int(values.min())
        hist = np.bincount((values.astype(np.int64) - lo) if lo else values.astype(np.int64, copy=False))
        return histogram_quantile_edges(lo, hist, n_bins)
    k = np.minimum(np.ceil(np.arange(1, n_bins) * values.size / n_bins).astype(np.int64), values.size - 1)
    part = np.partition(values, np.unique(np.r_[0, k, values.size - 1]))
    inner = part[k].astype(np.float64)
    lo_v, hi_v = float(part[0]), float(part[-1])
    top = hi_v + 1 if values.dtype.kind in "iub" else float(np.nextafter(hi_v, np.inf))
    return np.unique(np.r_[lo_v, inner, top])


def histogram_quantile_edges(lo: int, hist: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`quantile_edges` of integer values given as counts ``hist`` of ``lo, lo + 1, ...``."""
    if n_bins < 1:
        raise ValueError(f"`bins` must be at least 1, got {n_bins}.")
    n = int(hist.sum())
    if n == 0:
        return np.zeros(0)
    k = np.minimum(np.ceil(np.arange(1, n_bins) * n / n_bins).astype(np.int64), n - 1)
    inner = np.searchsorted(np.cumsum(hist), k + 1, side="left").astype(np.float64) + lo
    present = np.flatnonzero(hist)
    return np.unique(np.r_[float(lo + present[0]), inner, float(lo + present[-1]) + 1])


def _assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value for half-open bins ``[e_i, e_i+1)``; -1 outside the edges."""
    b = np.searchsorted(edges, values, side="right") - 1
    b[b >= len(edges) - 1] = -1
    return b


def _edges(values: np.ndarray, bins: int | Sequence[float]) -> np.ndarray:
    if np.ndim(bins) == 0:
        edges = quantile_edges(values, int(bins))
        return edges if len(edges) >= 2 else np.array([np.nan, np.nan])  # no values: one empty bin
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("Explicit `bins` must be a strictly increasing sequence of at least 2 edges.")
    return edges


def _coverage_table(edges: np.ndarray, total: np.ndarray, inside: np.ndarray, count_name: str) -> pd.DataFrame:
    nb = len(edges) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = inside / total
    return pd.DataFrame(
        {
            "bin": np.arange(nb),
            "lower": edges[:-1],
            "upper": edges[1:],
            count_name: total.astype(np.int64),
            "n_in_cells": inside.astype(np.int64),
            "fraction": fraction,
        }
    )


def pixel_coverage_from_labels(
    labels: np.ndarray, image: np.ndarray, *, bins: int | Sequence[float] = 10
) -> pd.DataFrame:
    """Proportion of pixels inside cells for each level of pixel value (Fig. 2d of the paper).

    Parameters
    ----------
    labels
        Label image ``(y, x)``, 0 = background.
    image
        Image ``(y, x)`` of the same shape (e.g. the nucleus stain).
    bins
        Number of quantile bins of the image's pixel values (equal pixel counts per bin), or explicit
        bin edges. Bins are closed on the left, the last one on both sides.

    Returns
    -------
    Tidy DataFrame, one row per bin: ``bin``, ``lower``, ``upper``, ``n_pixels``, ``n_in_cells``, ``fraction``.
    """
    labels = as_labels(labels)
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"Image shape {image.shape} differs from the labels' {labels.shape}; they must share a frame.")
    flat = image.ravel()
    fg = labels.ravel() > 0
    if _use_histogram(flat):
        lo = int(flat.min())
        shifted = flat.astype(np.int64) - lo if lo else flat
        hist = np.bincount(shifted)
        return coverage_from_histograms(lo, hist, np.bincount(shifted[fg], minlength=len(hist)), bins, "n_pixels")
    return coverage_from_values(flat, fg, bins, "n_pixels")


def coverage_from_values(values: np.ndarray, inside_cell: np.ndarray, bins, count_name: str) -> pd.DataFrame:
    """Coverage rows from one value per pixel or transcript and whether it lies in a cell."""
    edges = _edges(values, bins)
    nb = len(edges) - 1
    b = _assign_bins(values.astype(np.float64), edges)
    ok = b >= 0
    return _coverage_table(
        edges, np.bincount(b[ok], minlength=nb), np.bincount(b[ok & inside_cell], minlength=nb), count_name
    )


def coverage_from_histograms(lo: int, hist: np.ndarray, hist_in: np.ndarray, bins, count_name: str) -> pd.DataFrame:
    """Coverage rows from counts of integer values ``lo, lo + 1, ...`` (all, and in cells)."""
    if np.ndim(bins) == 0:
        edges = histogram_quantile_edges(lo, hist, int(bins))
        edges = edges if len(edges) >= 2 else np.array([np.nan, np.nan])
    else:
        edges = _edges(np.zeros(0), bins)
    nb = len(edges) - 1
    lut = _assign_bins(np.arange(len(hist), dtype=np.float64) + lo, edges)
    ok = lut >= 0
    total = np.bincount(lut[ok], weights=hist[ok], minlength=nb)
    inside = np.bincount(lut[ok], weights=hist_in[ok], minlength=nb)
    return _coverage_table(edges, total, inside, count_name)


def rna_coverage_from_labels(
    labels: np.ndarray, image: np.ndarray, x: np.ndarray, y: np.ndarray, *, bins: int | Sequence[float] = 10
) -> pd.DataFrame:
    """Proportion of transcripts inside cells by the pixel value under them (Fig. 2e of the paper).

    Parameters
    ----------
    labels
        Label image ``(y, x)``, 0 = background.
    image
        Image ``(y, x)`` of the same shape.
    x, y
        Transcript coordinates in pixels; transcripts outside the image are ignored.
    bins
        Number of quantile bins of the pixel values under the transcripts (equal transcript counts
        per bin), or explicit bin edges.

    Returns
    -------
    Tidy DataFrame, one row per bin: ``bin``, ``lower``, ``upper``, ``n_transcripts``, ``n_in_cells``,
    ``fraction``.
    """
    labels = as_labels(labels)
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"Image shape {image.shape} differs from the labels' {labels.shape}; they must share a frame.")
    rows, cols, _ = pixel_index(x, y, labels.shape)
    return coverage_from_values(image[rows, cols], labels[rows, cols] > 0, bins, "n_transcripts")


# --------------------------------------------------------------------------------------------------
# genes per cell (Fig. 2f)
# --------------------------------------------------------------------------------------------------
def n_genes_from_counts(counts) -> np.ndarray:
    """Count the genes with at least one read in each cell (row) of a cells x genes count matrix."""
    if sparse.issparse(counts):
        counts = sparse.csr_matrix(counts)
        return np.diff((counts > 0).indptr).astype(np.int64)
    return np.count_nonzero(np.asarray(counts) > 0, axis=1).astype(np.int64)


def counts_from_ids(cell_ids: np.ndarray, gene_codes: np.ndarray, n_cells: int, n_genes: int) -> sparse.csr_matrix:
    """Sparse ``(n_cells, n_genes)`` counts from per-transcript cell ids (0 = none) and gene codes."""
    cell_ids = np.asarray(cell_ids, dtype=np.int64)
    gene_codes = np.asarray(gene_codes, dtype=np.int64)
    ok = (cell_ids > 0) & (cell_ids < n_cells) & (gene_codes >= 0)
    data = np.ones(int(ok.sum()), dtype=np.int32)
    return sparse.coo_matrix((data, (cell_ids[ok], gene_codes[ok])), shape=(n_cells, n_genes)).tocsr()


def histogram_table(values: np.ndarray, *, bins: int | Sequence[float] | None = None, name: str) -> pd.DataFrame:
    """Tidy histogram of integer per-cell values: one row per value (``bins=None``) or per bin."""
    values = np.asarray(values)
    n = len(values)
    if bins is None:
        counts = np.bincount(values.astype(np.int64)) if n else np.zeros(0, np.int64)
        return pd.DataFrame({name: np.arange(len(counts)), "n_cells": counts, "fraction": counts / max(n, 1)})
    if np.ndim(bins) == 0:
        hi = float(values.max()) if n else 1.0
        edges = np.linspace(0.0, max(hi, 1.0) + 1e-9, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    counts, edges = np.histogram(values, bins=edges)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "n_cells": counts, "fraction": counts / max(n, 1)})


# --------------------------------------------------------------------------------------------------
# accuracy against ground truth
# --------------------------------------------------------------------------------------------------
def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse IoU between every predicted and every true cell that overlap.

    The pixel contingency table is built from run lengths of the (pred, truth) pair along the
    raster, so its cost is one pass over the image plus one entry per run.

    Returns
    -------
    ``iou`` (``n_pred x n_true`` csr, zero where cells do not overlap), the predicted ids and the true
    ids that index its rows and columns (labels present in each image, sorted).
    """
    pred = as_labels(pred)
    truth = as_labels(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"Predicted labels {pred.shape} and truth {truth.shape} differ in shape.")
    pf = pred.ravel()
    tf = truth.ravel()
    area_p = np.bincount(pf)
    area_t = np.bincount(tf)
    pred_ids = np.flatnonzero(area_p)
    pred_ids = pred_ids[pred_ids > 0]
    true_ids = np.flatnonzero(area_t)
    true_ids = true_ids[true_ids > 0]
    if pf.size:
        change = np.flatnonzero((pf[1:] != pf[:-1]) | (tf[1:] != tf[:-1])) + 1
        starts = np.r_[0, change]
        lengths = np.diff(np.r_[starts, pf.size])
        rp, rt = pf[starts].astype(np.int64), tf[starts].astype(np.int64)
        both = (rp > 0) & (rt > 0)
        rp, rt, lengths = rp[both], rt[both], lengths[both]
    else:
        rp = rt = lengths = np.zeros(0, np.int64)
    iou = iou_from_overlaps(pred_ids, area_p[pred_ids], true_ids, area_t[true_ids], rp, rt, lengths)
    return iou, pred_ids, true_ids


def iou_from_overlaps(pred_ids, pred_area, true_ids, true_area, pred_of, true_of, counts) -> sparse.csr_matrix:
    """Sparse IoU from the cells' areas and pixel counts of overlapping pairs (``pred_of``, ``true_of``: ids)."""
    inter = sparse.coo_matrix(
        (np.asarray(counts, np.float64), (np.searchsorted(pred_ids, pred_of), np.searchsorted(true_ids, true_of))),
        shape=(len(pred_ids), len(true_ids)),
    ).tocsr()
    inter.sum_duplicates()
    coo = inter.tocoo()
    union = pred_area[coo.row] + true_area[coo.col] - coo.data
    return sparse.csr_matrix((coo.data / union, (coo.row, coo.col)), shape=inter.shape)


def match_iou(iou: sparse.csr_matrix, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of predicted (rows) to true (columns) cells with ``IoU >= threshold``.

    A maximum-cardinality bipartite matching on the pairs above the threshold; for thresholds of
    0.5 and more each cell has at most one such partner (ties at exactly 0.5 aside), so this is the
    usual matching of the cell-segmentation literature (StarDist, Cellpose).

    Returns
    -------
    Row indices, column indices and IoU of the matched pairs.
    """
    graph = iou.tocsr(copy=True)
    graph.data = np.where(graph.data >= threshold, graph.data, 0.0)
    graph.eliminate_zeros()
    if graph.nnz == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    col_for_row = maximum_bipartite_matching(graph, perm_type="column")
    rows = np.flatnonzero(col_for_row >= 0)
    cols = col_for_row[rows].astype(np.int64)
    values = np.asarray(graph[rows, cols]).ravel()
    return rows, cols, values


def segmentation_accuracy(iou: sparse.csr_matrix, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Score detection at each IoU threshold from a predicted x true IoU matrix.

    Columns: ``n_pred``, ``n_true``, ``tp``, ``fp``, ``fn``, ``precision`` = tp / (tp + fp), ``recall`` =
    tp / (tp + fn), ``f1``, ``average_precision`` = tp / (tp + fp + fn) (the "AP" of Cellpose and
    StarDist) and ``mean_matched_iou`` (mean IoU of the matched pairs).
    """
    n_pred, n_true = iou.shape
    records = []
    for thr in thresholds:
        _, _, values = match_iou(iou, float(thr))
        tp = len(values)
        fp, fn = n_pred - tp, n_true - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            records.append(
                {
                    "threshold": float(thr),
                    "n_pred": n_pred,
                    "n_true": n_true,
                    "tp": tp,
                    "fp": fp,
                    "fn": fn,
                    "precision": tp / (tp + fp) if tp + fp else np.nan,
                    "recall": tp / (tp + fn) if tp + fn else np.nan,
                    "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
                    "average_precision": tp / (tp + fp + fn) if tp + fp + fn else np.nan,
                    "mean_matched_iou": float(values.mean()) if tp else np.nan,
                }
            )
    return pd.DataFrame.from_records(records).set_index("threshold")


def mean_true_iou(iou: sparse.csr_matrix) -> float:
    """Mean over true cells of the best IoU any predicted cell reaches with it (0 when none overlaps)."""
    if iou.shape[1] == 0:
        return float("nan")
    best = np.asarray(iou.max(axis=0).todense()).ravel() if iou.shape[0] else np.zeros(iou.shape[1])
    return float(best.mean())


def transcript_accuracy(
    pred_cell: np.ndarray,
    true_cell: np.ndarray,
    pred_ids: np.ndarray,
    true_ids: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> dict[str, float]:
    """How many transcripts a segmentation puts in the right cell.

    A predicted cell stands for the true cell it is matched to (``rows``/``cols`` index ``pred_ids``
    and ``true_ids``, as returned by :func:`match_iou`); an unmatched predicted cell stands for no
    true cell. A transcript is right when its predicted cell stands for its true cell, or when both
    say background (0).

    Returns
    -------
    ``transcript_accuracy`` (all transcripts), ``transcript_precision`` (of those put in a cell) and
    ``transcript_recall`` (of those truly in a cell).
    """
    pred_cell = np.asarray(pred_cell, dtype=np.int64)
    true_cell = np.asarray(true_cell, dtype=np.int64)
    size = int(max(pred_cell.max(initial=0), pred_ids.max(initial=0))) + 1
    mapping = np.full(size, -1, dtype=np.int64)
    mapping[0] = 0
    mapping[pred_ids[rows]] = true_ids[cols]
    mapped = mapping[pred_cell]
    right = mapped == true_cell
    in_pred = pred_cell > 0
    in_true = true_cell > 0
    return {
        "transcript_accuracy": float(right.mean()) if len(right) else np.nan,
        "transcript_precision": float(right[in_pred].mean()) if in_pred.any() else np.nan,
        "transcript_recall": float(right[in_true].mean()) if in_true.any() else np.nan,
    }
