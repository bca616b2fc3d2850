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
from ._cells_pass import owned_cells
from ._metrics_core import (
    DEFAULT_DELTAS,
    calling_table,
    check_deltas,
    coverage_from_histograms,
    coverage_from_values,
    distance_to_cells,
    iou_from_overlaps,
    morphology_from_labels,
)


def _core(block) -> Window:
    return Window(block.y0, block.y1, block.x0, block.x1)


def _pixels(x: np.ndarray, y: np.ndarray, origin: Window) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of transcripts in an array whose first pixel is ``origin``'s corner."""
    return np.floor(y).astype(np.int64) - origin.y0, np.floor(x).astype(np.int64) - origin.x0


def _run(kernel, blocks, inputs, desc: str, progress: bool | None):
    from .._settings import settings

    progress = settings.progress if progress is None else progress
    return map_blocks(kernel, blocks, inputs, progress=progress, desc=desc)


# --------------------------------------------------------------------------------------------------
# cell calling
# --------------------------------------------------------------------------------------------------
def calling_kernel(labels: np.ndarray, window: Window, core: Window, x: np.ndarray, y: np.ndarray, reach: float):
    """Count the core's transcripts on a cell, and return the distances (``<= reach``) of the others to the cells."""
    rows, cols = _pixels(x, y, window)
    on_cell = labels[rows, cols] > 0
    if not labels.any():
        return int(on_cell.sum()), np.zeros(0)
    dist = distance_to_cells(labels, rows[~on_cell], cols[~on_cell], reach)
    return int(on_cell.sum()), dist[np.isfinite(dist)]


def cell_calling_blocks(
    source, index, *, deltas: Sequence[float] = DEFAULT_DELTAS, block_size: int, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.cell_calling_from_labels` over a grid of blocks (same numbers)."""
    deltas = check_deltas(deltas)
    reach = max(deltas)
    shape = tuple(source.shape)
    halo = int(np.floor(reach)) + 1

    def inputs(block):
        window = block.grow(halo, shape)
        tx = index.window(block)
        return source.read(window), window, _core(block), tx.x, tx.y, reach

    results = _run(calling_kernel, block_grid(shape, block_size), inputs, "cell calling", progress)
    n_in = sum(r[0] for r in results)
    dist = np.concatenate([r[1] for r in results]) if results else np.zeros(0)
    return calling_table(n_in, dist, deltas)


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
    wr, wc, ids, inverse, owned, cut = owned_cells(labels, window, core, shape)
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
    return pd.concat(tables).sort_index() if tables else morphology_from_labels(np.zeros((1, 1), np.int64))


# --------------------------------------------------------------------------------------------------
# coverage by pixel value
# --------------------------------------------------------------------------------------------------
def pixel_values_kernel(labels: np.ndarray, image: np.ndarray, histogram: bool):
    """Return a block's pixel values with their in-cell flag: as two histograms (integer images) or arrays."""
    image = np.asarray(image).ravel()
    fg = np.asarray(labels).ravel() > 0
    if not histogram:
        return image, fg
    lo = int(image.min())
    shifted = image.astype(np.int64) - lo
    hist = np.bincount(shifted)
    return lo, hist, np.bincount(shifted[fg], minlength=len(hist))


def _add_histograms(results) -> tuple[int, np.ndarray, np.ndarray]:
    lo = min(r[0] for r in results)
    size = max(r[0] - lo + len(r[1]) for r in results)
    total = np.zeros(size, np.int64)
    inside = np.zeros(size, np.int64)
    for r_lo, hist, hist_in in results:
        total[r_lo - lo : r_lo - lo + len(hist)] += hist
        inside[r_lo - lo : r_lo - lo + len(hist_in)] += hist_in
    return lo, total, inside


def pixel_coverage_blocks(
    source, image, *, bins: int | Sequence[float] = 10, block_size: int, progress: bool | None = None
) -> pd.DataFrame:
    """:func:`gsn.tl._metrics_core.pixel_coverage_from_labels` over a grid of blocks (same numbers).

    ``image`` is read by window like the labels. 8 and 16-bit integer images are summed as
    histograms (as the whole-image function bins them; memory bounded by their range); other images
    keep one value per pixel for their quantiles.
    """
    shape = tuple(source.shape)
    dtype = np.asarray(image.read(Window(0, 1, 0, 1))).dtype
    histogram = dtype.kind in "iub" and dtype.itemsize <= 2

    def inputs(block):
        return source.read(block), image.read(block), histogram

    results = _run(pixel_values_kernel, block_grid(shape, block_size), inputs, "pixel coverage", progress)
    if histogram:
        return coverage_from_histograms(*_add_histograms(results), bins, "n_pixels")
    values = np.concatenate([r[0] for r in results])
    return coverage_from_values(values, np.concatenate([r[1] for r in results]), bins, "n_pixels")


def rna_values_kernel(labels: np.ndarray, image: np.ndarray, core: Window, x: np.ndarray, y: np.ndarray):
    """Return the image value under each of the core's transcripts, and whether it is on a cell."""
    rows, cols = _pixels(x, y, core)
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
    return coverage_from_values(values, inside_cell, bins, "n_transcripts")


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
    counts = np.concatenate([r[5] for r in results]) if results else np.zeros(0)
    pred_ids, true_ids = pred_ids.astype(np.int64), true_ids.astype(np.int64)
    return iou_from_overlaps(pred_ids, area_p, true_ids, area_t, pairs[0], pairs[1], counts), pred_ids, true_ids


def label_kernel(labels: np.ndarray, core: Window, x: np.ndarray, y: np.ndarray, row: np.ndarray):
    """Return the rows of the core's transcripts and the label under each."""
    rows, cols = _pixels(x, y, core)
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
