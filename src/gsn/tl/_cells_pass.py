"""The last whole-slide pass of every segmentation: labels to polygons, counts, geometry and assignment.

:func:`cells_pass` runs :func:`cells_kernel` over a block grid (gsn's one driver,
:func:`gsn.blockwise.map_blocks`). Each block reads its labels on its window and its transcripts on its
core, and returns: per cell on its core, the pixel count and coordinate sums (summed over blocks:
exact areas and centroids); per transcript on its core, its cell (each molecule is on exactly one
core); the (cell, gene) counts of those transcripts; and the polygons of the cells it owns (a cell
is owned by the block whose core holds the top-left corner of its bounding box, so each polygon is
traced once, from a window that holds the whole cell when the halo is wider than the cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from .._arrays import compact
from .._logging import logger
from ..blockwise import Window, block_grid, map_blocks


@dataclass
class CellsBlock:
    """What one block contributes (see the module docstring)."""

    core_labels: np.ndarray | None
    ids: np.ndarray
    area: np.ndarray
    sum_rows: np.ndarray
    sum_cols: np.ndarray
    polygons: object
    n_cut: int
    tx_rows: np.ndarray
    tx_cells: np.ndarray
    pairs: np.ndarray  # (k, 3) cell, gene, count


def cells_kernel(
    labels: np.ndarray, window: Window, core: Window, shape: tuple[int, int], x: np.ndarray, y: np.ndarray,
    gene: np.ndarray, row: np.ndarray, *, polygons: bool, keep_core: bool,
) -> CellsBlock:  # fmt: skip
    """Per-block cells: see the module docstring. ``x``, ``y``, ``gene``, ``row``: the transcripts on ``core``."""
    from ._boundaries import labels_to_polygons

    labels = np.asarray(labels)
    core_labels = labels[core.within(window)]
    fg = core_labels > 0
    rr, cc = np.nonzero(fg)
    ids, inverse = compact(core_labels[fg])
    area = np.bincount(inverse, minlength=len(ids))
    sum_rows = np.bincount(inverse, weights=rr + core.y0, minlength=len(ids))
    sum_cols = np.bincount(inverse, weights=cc + core.x0, minlength=len(ids))

    gdf, n_cut = None, 0
    if polygons:
        _, _, wids, _, owned, cut = owned_cells(labels, window, core, shape)
        n_cut = int(np.count_nonzero(owned & cut))
        gdf = labels_to_polygons(labels, offset=(window.y0, window.x0), ids=wids[owned])

    tr = np.floor(y).astype(np.int64) - core.y0
    tc = np.floor(x).astype(np.int64) - core.x0
    cell = core_labels[tr, tc].astype(np.int64) if len(tr) else np.zeros(0, np.int64)
    on = cell > 0
    tx_rows, tx_cells, genes = row[on], cell[on], gene[on].astype(np.int64)
    if len(tx_cells):
        width = int(genes.max()) + 1
        keys, counts = np.unique(tx_cells * width + genes, return_counts=True)
        pairs = np.stack([keys // width, keys % width, counts], axis=1)
    else:
        pairs = np.zeros((0, 3), np.int64)
    return CellsBlock(
        core_labels if keep_core else None, ids, area, sum_rows, sum_cols, gdf, n_cut, tx_rows, tx_cells, pairs
    )


def owned_cells(labels: np.ndarray, window: Window, core: Window, shape: tuple[int, int]):
    """Find the cells of a window's labels and which of them its block owns.

    Returns the rows and columns of the window's cell pixels, the cell ids, each pixel's index into
    them, whether the block owns each cell (the top-left corner of its bounding box is on ``core``),
    and whether each cell touches a border of the window that is not the image's (it may be cut).
    """
    wr, wc = np.nonzero(labels)
    ids, inverse = compact(labels[wr, wc])
    min_r = np.full(len(ids), np.iinfo(np.int64).max)
    min_c = np.full(len(ids), np.iinfo(np.int64).max)
    np.minimum.at(min_r, inverse, wr)
    np.minimum.at(min_c, inverse, wc)
    owned = core.contains(min_r + window.y0, min_c + window.x0)
    cut = np.zeros(len(ids), dtype=bool)
    cut[inverse[window.on_inner_border(shape, wr, wc)]] = True
    return wr, wc, ids, inverse, owned, cut


@dataclass
class Cells:
    """A whole segmentation's cells: geometry, polygons, counts and the cell of every transcript."""

    stats: pd.DataFrame  # index: cell id; area, centroid_x, centroid_y (pixel frame, centres at +0.5)
    polygons: object  # GeoDataFrame indexed by cell id, or None
    counts: sparse.csr_matrix  # cells (in stats order) x genes
    transcript_cells: np.ndarray | None  # cell of every row of the points element, 0 = none


def cells_pass(
    source,
    *,
    index=None,
    n_genes: int = 0,
    out=None,
    block_size: int,
    halo: int,
    polygons: bool = True,
    client=None,
    workers_read: bool = False,
    progress: bool | None = None,
) -> Cells:
    """Run :func:`cells_kernel` over the labels ``source`` (``.shape``, ``.read(window)``).

    Parameters
    ----------
    source
        The labels, read by window.
    index
        A :class:`gsn.blockwise.TranscriptIndex` in the labels' pixel frame, or ``None`` (no transcripts).
    n_genes
        Number of genes (columns of the counts).
    out
        A :class:`gsn.blockwise.Raster` receiving the labels core by core (``None``: not written).
    block_size, halo
        The grid and the context each block reads around its core (wider than the largest cell).
    polygons
        Trace the polygons.
    client
        A ``dask.distributed.Client`` to run the blocks on.
    workers_read
        The workers read their windows and write ``out`` themselves (see :func:`gsn.blockwise.map_blocks`).
    progress
        Show a progress bar (default: ``gsn.settings.progress``).
    """
    import geopandas as gpd

    from .._settings import settings
    from ..blockwise import Transcripts

    shape = tuple(source.shape)
    blocks = block_grid(shape, block_size)
    progress = settings.progress if progress is None else progress

    def inputs(block):
        window = block.grow(halo, shape)
        tx = index.window(block) if index is not None else Transcripts.empty()
        return (source.read(window), window, Window(block.y0, block.y1, block.x0, block.x1), shape, tx.x, tx.y,
                tx.gene, tx.row)  # fmt: skip

    kernel = _CellsKernel(polygons=polygons, keep_core=out is not None)
    results = map_blocks(kernel, blocks, inputs, write=out, client=client, workers_read=workers_read,
                         progress=progress, desc="cells")  # fmt: skip

    ids = np.concatenate([r.ids for r in results]).astype(np.int64)
    cells, inverse = compact(ids)
    area = np.bincount(inverse, weights=np.concatenate([r.area for r in results]), minlength=len(cells))
    sy = np.bincount(inverse, weights=np.concatenate([r.sum_rows for r in results]), minlength=len(cells))
    sx = np.bincount(inverse, weights=np.concatenate([r.sum_cols for r in results]), minlength=len(cells))
    safe = np.maximum(area, 1)
    stats = pd.DataFrame(
        {"area": area.astype(np.int64), "centroid_x": sx / safe + 0.5, "centroid_y": sy / safe + 0.5},
        index=cells.astype(np.int64),
    )
    gdf = None
    if polygons:
        n_cut = sum(r.n_cut for r in results)
        if n_cut:
            logger.warning(
                "%d cell(s) are wider than the %d px halo of the %d px blocks: their polygons may be cut. "
                "Pass a larger `halo`.", n_cut, halo, block_size,
            )  # fmt: skip
        frames = [r.polygons for r in results if r.polygons is not None and len(r.polygons)]
        gdf = pd.concat(frames) if frames else gpd.GeoDataFrame(geometry=[], index=np.zeros(0, np.int64))
        gdf = gdf[~gdf.index.duplicated(keep="first")].sort_index()
        gdf = gpd.GeoDataFrame(gdf, geometry="geometry")
    pairs = np.concatenate([r.pairs for r in results]) if results else np.zeros((0, 3), np.int64)
    rows = np.searchsorted(cells, pairs[:, 0])
    counts = sparse.coo_matrix((pairs[:, 2].astype(np.int32), (rows, pairs[:, 1])), shape=(len(cells), n_genes)).tocsr()
    transcript_cells = None
    if index is not None:
        transcript_cells = np.zeros(index.n, dtype=np.int64)
        for r in results:
            transcript_cells[r.tx_rows] = r.tx_cells
    return Cells(stats, gdf, counts, transcript_cells)


@dataclass(frozen=True)
class _CellsKernel:
    """:func:`cells_kernel` with its options bound (picklable for dask)."""

    polygons: bool
    keep_core: bool

    def __call__(self, *args):
        block = cells_kernel(*args, polygons=self.polygons, keep_core=self.keep_core)
        if not self.keep_core:
            return block
        core, block.core_labels = block.core_labels, None
        return core, block  # the core goes to the labels raster, the rest to this process


def relabel(cells: Cells, lut: np.ndarray) -> Cells:
    """Renumber the cells of ``cells`` through ``lut`` (old id -> new id, increasing)."""
    stats = cells.stats.copy()
    stats.index = lut[stats.index.to_numpy()].astype(np.int64)
    polygons = cells.polygons
    if polygons is not None:
        polygons = polygons.copy()
        polygons.index = lut[polygons.index.to_numpy()].astype(np.int64)
    tx = None if cells.transcript_cells is None else lut[cells.transcript_cells].astype(np.int64)
    return Cells(stats, polygons, cells.counts, tx)
