"""The paper's label-free metrics block by block, through gsn's one driver.

Each metric is a pure kernel on one block's window of labels (and image, and the transcripts of its
core) whose results are summed or concatenated over the grid, so no whole-slide label image is
loaded and the numbers equal the whole-image definitions of :mod:`gsn.tl._metrics_core` exactly
(tested for several block sizes):

- cell calling: a background transcript's distance to the nearest cell pixel needs ``max(deltas)``
  pixels of context around the core, the halo;
- morphology: a cell is measured by the block whose core holds the top-left corner of its bounding
  box, from a window that holds the whole cell when the halo is wider than the cell (as polygons);
- pixel coverage: per-block histograms of the pixel values (integer images) or the values themselves
  (other images) with an in-cell flag; quantile edges are taken from their union;
- RNA coverage: the image value under every transcript of the core, and whether it is in a cell;
- accuracy against true cells: per-block pixel counts of every (predicted, true) pair of cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._arrays import compact
from .._logging import logger
from ..blockwise import Window, block_grid, map_blocks
from ._metrics_core import (
    DEFAULT_DELTAS,
    _assign_bins,
    _coverage_table,
    _edges,
    _use_histogram,
    distance_to_cells,
    morphology_from_labels,
)


def _core(block) -> Window:
    return Window(block.y0, block.y1, block.x0, block.x1)


def _run(kernel, blocks, inputs, desc: str, progress: bool | None):
    from .._settings import settings

    progress = settings.progress if progress is None else progress
    return map_blocks(kernel, blocks, inputs, progress=progress, desc=desc)


# --------------------------------------------------------------------------------------------------
# cell calling
# --------------------------------------------------------------------------------------------------
def calling_kernel(labels: np.ndarray, window: Window, core: Window, x: np.ndarray, y: np.ndarray, reach: float):
    """Count the core's transcripts on a cell, and return the distances (``<= reach``) of the others to the cells."""
    rows = np.floor(y).astype(np.int64) - window.y0
    cols = np.floor(x).astype(np.int64) - window.x0
    on_cell = labels[rows, cols] > 0
    if not labels.any():
        return int(on_cell.sum()), np.zeros(0)
    dist = distance_to_cells(labels, rows[~on_cell], cols[~on_cell], reach)
    return int(on_cell.sum()), dist[np.isfinite(dist)]


def cell_calling_blocks(
    source, index, *, deltas: Sequence[float] = DEFAULT_DELTAS, block_size: int, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.cell_calling_from_labels` over a grid of blocks (same numbers)."""
    deltas = [float(d) for d in deltas]
    if not deltas or min(deltas) < 0:
        raise ValueError(f"`deltas` must be non-negative distances in pixels, got {deltas}.")
    reach = max(deltas)
    if int(np.floor(reach)) + 1 > 255:
        raise ValueError(f"`max_distance` must be below 255 pixels, got {reach}.")
    shape = tuple(source.shape)
    halo = int(np.floor(reach)) + 1

    def inputs(block):
        window = block.grow(halo, shape)
        tx = index.window(block)
        return source.read(window), window, _core(block), tx.x, tx.y, reach

    results = _run(calling_kernel, block_grid(shape, block_size), inputs, "cell calling", progress)
    n_in = sum(r[0] for r in results)
    dist = np.concatenate([r[1] for r in results]) if results else np.zeros(0)
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
@dataclass
class _Shapes:
    table: pd.DataFrame
    n_cut: int


def morphology_kernel(labels: np.ndarray, window: Window, core: Window, shape: tuple[int, int]) -> _Shapes:
    """Shapes of the cells this block owns (top-left corner of the bounding box on its core)."""
    labels = np.asarray(labels)
    wr, wc = np.nonzero(labels)
    if not len(wr):
        return _Shapes(morphology_from_labels(np.zeros((1, 1), np.int64)), 0)
    ids, inverse = compact(labels[wr, wc])
    min_r = np.full(len(ids), np.iinfo(np.int64).max)
    min_c = np.full(len(ids), np.iinfo(np.int64).max)
    np.minimum.at(min_r, inverse, wr)
    np.minimum.at(min_c, inverse, wc)
    owned = core.contains(min_r + window.y0, min_c + window.x0)
    cut = np.zeros(len(ids), dtype=bool)
    cut[inverse[window.on_inner_border(shape, wr, wc)]] = True
    # Only the owned cells, numbered 1..k: other cells become background, which leaves every owned
    # cell's outline, hull and boundary pixels as they are (they are defined against "not this cell").
    new = np.zeros(len(ids), dtype=np.int64)
    new[owned] = np.arange(1, int(owned.sum()) + 1)
    local = np.zeros(labels.shape, dtype=np.int64)
    local[wr, wc] = new[inverse]
    table = morphology_from_labels(local)
    table.index = pd.Index(ids[owned][table.index.to_numpy() - 1].astype(np.int64), name="cell_id")
    return _Shapes(table, int(np.count_nonzero(owned & cut)))


def morphology_blocks(source, *, block_size: int, halo: int, progress: bool | None = None) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.morphology_from_labels` over a grid of blocks (same numbers)."""
    shape = tuple(source.shape)

    def inputs(block):
        window = block.grow(halo, shape)
        return source.read(window), window, _core(block), shape

    results = _run(morphology_kernel, block_grid(shape, block_size), inputs, "morphology", progress)
    n_cut = sum(r.n_cut for r in results)
    if n_cut:
        logger.warning(
            "%d cell(s) are wider than the %d px context of the %d px blocks: their shapes are measured on a "
            "cut piece. Pass a larger `block_size`.", n_cut, halo, block_size,
        )  # fmt: skip
    tables = [r.table for r in results if len(r.table)]
    if not tables:
        return results[0].table if results else morphology_from_labels(np.zeros((1, 1), np.int64))
    return pd.concat(tables).sort_index()


# --------------------------------------------------------------------------------------------------
# coverage by pixel value
# --------------------------------------------------------------------------------------------------
def pixel_values_kernel(labels: np.ndarray, image: np.ndarray, histogram: bool):
    """Return a block's pixel values with their in-cell flag: as two histograms (integer images) or arrays."""
    labels = np.asarray(labels).ravel()
    image = np.asarray(image).ravel()
    fg = labels > 0
    if not histogram:
        return image, fg
    lo = int(image.min()) if image.size else 0
    shifted = image.astype(np.int64) - lo
    return lo, np.bincount(shifted), np.bincount(shifted[fg], minlength=int(shifted.max()) + 1 if image.size else 0)


def _add_histograms(results) -> tuple[int, np.ndarray, np.ndarray]:
    lo = min(r[0] for r in results)
    size = max(r[0] - lo + len(r[1]) for r in results)
    total = np.zeros(size, np.int64)
    inside = np.zeros(size, np.int64)
    for r_lo, hist, hist_in in results:
        total[r_lo - lo : r_lo - lo + len(hist)] += hist
        inside[r_lo - lo : r_lo - lo + len(hist_in)] += hist_in
    return lo, total, inside


def _histogram_edges(lo: int, hist: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`gsn.tl._metrics_core.quantile_edges` of integer values given by their histogram."""
    n = int(hist.sum())
    if n == 0:
        return np.array([np.nan, np.nan])
    if n_bins < 1:
        raise ValueError(f"`bins` must be at least 1, got {n_bins}.")
    k = np.minimum(np.ceil(np.arange(1, n_bins) * n / n_bins).astype(np.int64), n - 1)
    cdf = np.cumsum(hist)
    inner = np.searchsorted(cdf, k + 1, side="left").astype(np.float64) + lo
    present = np.flatnonzero(hist)
    lo_v, hi_v = float(lo + present[0]), float(lo + present[-1])
    edges = np.unique(np.r_[lo_v, inner, hi_v + 1])
    return edges if len(edges) >= 2 else np.array([np.nan, np.nan])


def pixel_coverage_blocks(
    source, image, *, bins: int | Sequence[float] = 10, block_size: int, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.pixel_coverage_from_labels` over a grid of blocks (same numbers).

    ``image`` is read by window like the labels. Integer images are summed as histograms (memory
    bounded by their range); other images keep one value per pixel for their quantiles.
    """
    shape = tuple(source.shape)
    probe = np.asarray(image.read(Window(0, min(shape[0], 64), 0, min(shape[1], 64))))
    # The whole-image function bins integer images through a histogram; so do the blocks, which also
    # keeps memory flat. A wide-ranged 32/64-bit integer image falls back to values.
    histogram = probe.dtype.kind in "iub" and (probe.dtype.itemsize <= 2 or _use_histogram(probe))
    blocks = block_grid(shape, block_size)

    def inputs(block):
        return source.read(block), image.read(block), histogram

    results = _run(pixel_values_kernel, blocks, inputs, "pixel coverage", progress)
    if histogram:
        lo, total_hist, inside_hist = _add_histograms(results)
        edges = _histogram_edges(lo, total_hist, int(bins)) if np.ndim(bins) == 0 else _edges(np.zeros(0), bins)
        nb = len(edges) - 1
        lut = _assign_bins(np.arange(len(total_hist), dtype=np.float64) + lo, edges)
        ok = lut >= 0
        total = np.bincount(lut[ok], weights=total_hist[ok], minlength=nb)
        inside = np.bincount(lut[ok], weights=inside_hist[ok], minlength=nb)
        return _coverage_table(edges, total, inside, "n_pixels")
    values = np.concatenate([r[0] for r in results])
    fg = np.concatenate([r[1] for r in results])
    edges = _edges(values, bins)
    nb = len(edges) - 1
    b = _assign_bins(values.astype(np.float64), edges)
    ok = b >= 0
    return _coverage_table(edges, np.bincount(b[ok], minlength=nb), np.bincount(b[ok & fg], minlength=nb), "n_pixels")


def rna_values_kernel(labels: np.ndarray, image: np.ndarray, core: Window, x: np.ndarray, y: np.ndarray):
    """Return the image value under each of the core's transcripts, and whether it is on a cell."""
    rows = np.floor(y).astype(np.int64) - core.y0
    cols = np.floor(x).astype(np.int64) - core.x0
    return np.asarray(image)[rows, cols], np.asarray(labels)[rows, cols] > 0


def rna_coverage_blocks(
    source, image, index, *, bins: int | Sequence[float] = 10, block_size: int, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.rna_coverage_from_labels` over a grid of blocks (same numbers)."""
    shape = tuple(source.shape)

    def inputs(block):
        tx = index.window(block)
        return source.read(block), image.read(block), _core(block), tx.x, tx.y

    results = _run(rna_values_kernel, block_grid(shape, block_size), inputs, "RNA coverage", progress)
    values = np.concatenate([r[0] for r in results]) if results else np.zeros(0)
    inside_cell = np.concatenate([r[1] for r in results]) if results else np.zeros(0, bool)
    edges = _edges(values, bins)
    nb = len(edges) - 1
    b = _assign_bins(values.astype(np.float64), edges)
    ok = b >= 0
    total = np.bincount(b[ok], minlength=nb)
    inside = np.bincount(b[ok & inside_cell], minlength=nb)
    return _coverage_table(edges, total, inside, "n_transcripts")


# --------------------------------------------------------------------------------------------------
# accuracy against true cells
# --------------------------------------------------------------------------------------------------
def overlap_kernel(pred: np.ndarray, truth: np.ndarray):
    """Return a block's pixel counts per predicted id, per true id, and per overlapping (pred, true) pair."""
    pf = np.asarray(pred).ravel().astype(np.int64)
    tf = np.asarray(truth).ravel().astype(np.int64)
    p_ids, p_area = np.unique(pf, return_counts=True)
    t_ids, t_area = np.unique(tf, return_counts=True)
    both = (pf > 0) & (tf > 0)
    pairs, counts = np.unique(np.stack([pf[both], tf[both]]), axis=1, return_counts=True)
    return p_ids, p_area, t_ids, t_area, pairs, counts


def iou_blocks(pred, truth, *, block_size: int, progress: bool | None = None):
    """:func:`gsn.tl._metrics_core.iou_matrix` over a grid of blocks (same matrix and ids)."""
    from scipy import sparse

    shape = tuple(pred.shape)
    if tuple(truth.shape) != shape:
        raise ValueError(f"Predicted labels {shape} and truth {tuple(truth.shape)} differ in shape.")

    def inputs(block):
        return pred.read(block), truth.read(block)

    results = _run(overlap_kernel, block_grid(shape, block_size), inputs, "overlaps", progress)

    def totals(ids, areas):
        ids, inverse = compact(np.concatenate(ids))
        return ids, np.bincount(inverse, weights=np.concatenate(areas), minlength=len(ids))

    p_all, area_p = totals([r[0] for r in results], [r[1] for r in results])
    t_all, area_t = totals([r[2] for r in results], [r[3] for r in results])
    pred_ids, area_p = p_all[p_all > 0], area_p[p_all > 0]
    true_ids, area_t = t_all[t_all > 0], area_t[t_all > 0]
    pairs = np.concatenate([r[4] for r in results], axis=1) if results else np.zeros((2, 0), np.int64)
    counts = np.concatenate([r[5] for r in results]).astype(np.float64) if results else np.zeros(0)
    inter = sparse.coo_matrix(
        (counts, (np.searchsorted(pred_ids, pairs[0]), np.searchsorted(true_ids, pairs[1]))),
        shape=(len(pred_ids), len(true_ids)),
    ).tocsr()
    inter.sum_duplicates()
    coo = inter.tocoo()
    union = area_p[coo.row] + area_t[coo.col] - coo.data
    iou = sparse.csr_matrix((coo.data / union, (coo.row, coo.col)), shape=inter.shape)
    return iou, pred_ids.astype(np.int64), true_ids.astype(np.int64)


def label_kernel(labels: np.ndarray, core: Window, x: np.ndarray, y: np.ndarray, row: np.ndarray):
    """Return the rows of the core's transcripts and the label under each."""
    rows = np.floor(y).astype(np.int64) - core.y0
    cols = np.floor(x).astype(np.int64) - core.x0
    return row, np.asarray(labels)[rows, cols].astype(np.int64)


def labels_at_blocks(source, index, *, block_size: int, progress: bool | None = None) -> np.ndarray:
    """Return the label under every row of the points element (0 for background and off the image), by block."""
    shape = tuple(source.shape)

    def inputs(block):
        tx = index.window(block)
        return source.read(block), _core(block), tx.x, tx.y, tx.row

    out = np.zeros(index.n, dtype=np.int64)
    for rows, values in _run(label_kernel, block_grid(shape, block_size), inputs, "labels", progress):
        out[rows] = values
    return out
