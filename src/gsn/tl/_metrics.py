"""Label-free segmentation metrics of the GeneSegNet paper on SpatialData segmentations.

Each function works on one segmentation written by :func:`gsn.tl.cells_from_labels` or
:func:`gsn.tl.segment`, named by its prefix ``key`` (elements ``<key>_labels``, ``<key>_table`` and
the transcripts' ``<key>_cell_id`` column). They find the arrays and call the pure functions of
:mod:`gsn.tl._metrics_core`, which hold the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import spatialdata as sd

from .._constants import INSTANCE_KEY, Key
from .._elements import get_single_channel, label_source
from .._logging import logger
from ._cells import transcript_index
from ._metrics_blocks import cell_calling_blocks, morphology_blocks, pixel_coverage_blocks, rna_coverage_blocks
from ._metrics_core import DEFAULT_DELTAS, histogram_table, n_genes_from_counts

MORPHOLOGY_COLUMNS = ("area", "perimeter", "convex_perimeter", "elongation", "convexity")


# --------------------------------------------------------------------------------------------------
# finding the arrays of a segmentation
# --------------------------------------------------------------------------------------------------
def labels_name(sdata: sd.SpatialData, key: str) -> str:
    """Labels element of a segmentation: ``<key>_labels``, or ``key`` itself when it names a labels element."""
    if Key.labels(key) in sdata.labels:
        return Key.labels(key)
    if key in sdata.labels:
        return key
    present = ", ".join(repr(k) for k in sdata.labels) or "none"
    raise KeyError(
        f"No segmentation {key!r}: the SpatialData object has no labels element {Key.labels(key)!r} "
        f"(labels present: {present}). Run `gsn.tl.cells_from_labels` or `gsn.tl.segment` first."
    )


def labels_source(sdata: sd.SpatialData, key: str):
    """Name, element (full-resolution ``DataArray``) and window reader of a segmentation's labels."""
    return label_source(sdata, labels_name(sdata, key))


def image_source(sdata: sd.SpatialData, image_key: str | None, channel, shape: tuple[int, int]):
    """One channel of an image read by window, checked to share the labels' pixel frame."""
    from ..blockwise import ArraySource

    image_key, image = get_single_channel(sdata, image_key, channel=channel)
    source = ArraySource(image)
    if source.shape != tuple(shape):
        raise ValueError(
            f"Image {image_key!r} ({source.shape[0]} x {source.shape[1]} px) and the labels ({shape[0]} x {shape[1]} "
            "px) are not in the same pixel frame; pixel-level metrics need labels drawn on the image's pixels."
        )
    return source


def _block_size(block_size: int | None) -> int:
    from ..blockwise import BLOCK_SIZE

    if block_size is None:
        return BLOCK_SIZE
    if int(block_size) < 64:
        raise ValueError(f"`block_size` must be at least 64 pixels, got {block_size}.")
    return int(block_size)


def get_table(sdata: sd.SpatialData, key: str) -> ad.AnnData:
    """Table of a segmentation: ``<key>_table``, or ``key`` itself when it names a table."""
    for name in (Key.table(key), key):
        if name in sdata.tables:
            return sdata.tables[name]
    present = ", ".join(repr(k) for k in sdata.tables) or "none"
    raise KeyError(f"No table {Key.table(key)!r} for segmentation {key!r} (tables present: {present}).")


def _resolve_adata(data: ad.AnnData | sd.SpatialData, key: str | None) -> ad.AnnData:
    if isinstance(data, ad.AnnData):
        return data
    if isinstance(data, sd.SpatialData):
        if key is None:
            raise ValueError("Pass `key`, the prefix of the segmentation whose table to use.")
        return get_table(data, key)
    raise TypeError(f"Expected an AnnData or a SpatialData object, got {type(data).__name__}.")


# --------------------------------------------------------------------------------------------------
# public metrics
# --------------------------------------------------------------------------------------------------
def cell_calling(
    sdata: sd.SpatialData,
    key: str,
    *,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    points_key: str | None = None,
    block_size: int | None = None,
) -> pd.DataFrame:
    """Cell calling score of a segmentation: transcripts inside cells over transcripts just outside.

    For each ``delta``, ``|g_in| / |g_out(delta)|`` where ``g_in`` are the transcripts on a cell pixel
    and ``g_out(delta)`` those on background within ``delta`` pixels (Euclidean, between pixel
    centres) of the nearest cell-boundary pixel (GeneSegNet paper, "Cell calling"; Fig. 2c). Higher
    means the segmentation recruits more of the RNA around its cells.

    Parameters
    ----------
    sdata
        SpatialData object holding the segmentation and the transcripts.
    key
        Prefix of the segmentation (its labels are ``<key>_labels``), or a labels element name.
    deltas
        Distances in pixels of the labels' frame (paper: 3, 5 and 7).
    points_key
        Transcripts element; may be omitted when there is exactly one.
    block_size
        Side of the blocks the labels are read in (default ``gsn.blockwise.BLOCK_SIZE``); the result
        does not depend on it.

    Returns
    -------
    DataFrame with one row per delta: ``delta``, ``n_in``, ``n_out`` and ``cell_calling``.

    Examples
    --------
    >>> gsn.tl.cell_calling(sdata, "genesegnet")  # doctest: +SKIP
    """
    name, element, source = labels_source(sdata, key)
    index = transcript_index(sdata, points_key, element, name)
    return cell_calling_blocks(source, index, deltas=deltas, block_size=_block_size(block_size))


def morphology(
    sdata: sd.SpatialData, key: str, *, inplace: bool = True, block_size: int | None = None
) -> pd.DataFrame | None:
    """Per-cell shape: area, perimeter, convex perimeter, elongation and convexity.

    Definitions (GeneSegNet paper, "Evaluation Metrics"; Fig. 2g-i):

    - ``area``: number of pixels of the cell.
    - ``perimeter``: length ``r_cell`` of the cell's outline, traced through the midpoints between its
      boundary pixels and their outside neighbours (marching squares on the cell's mask).
    - ``convex_perimeter``: perimeter ``r_convex`` of the convex hull of that outline.
    - ``convexity``: ``r_convex / r_cell``, 1 for a convex cell, lower for ragged or concave ones.
    - ``elongation``: ``e_b / e_a``, the smaller over the larger eigenvalue of the covariance of the
      coordinates of the cell's boundary pixels; 1 for a disk, towards 0 for a line (NaN for a
      single pixel).

    All cells are measured at once (run-length encoding, bincounts and a vectorised convex hull),
    with no loop over cells, block by block: each cell is measured by one block from a window that
    holds it whole when it is narrower than ``gsn.blockwise.LABELS_HALO`` (a WARNING names the cells
    that are not).

    Parameters
    ----------
    sdata
        SpatialData object holding the segmentation.
    key
        Prefix of the segmentation, or a labels element name (then ``inplace=False`` is needed unless a
        table ``<key>_table`` exists).
    inplace
        Write the columns into ``obs`` of ``<key>_table``, matched on ``obs["cell_id"]`` (cells of the
        table absent from the labels get NaN); otherwise return them.
    block_size
        Side of the blocks (default ``gsn.blockwise.BLOCK_SIZE``); the result does not depend on it.

    Returns
    -------
    With ``inplace=False``, a DataFrame indexed by cell id (label value) with the five columns.
    """
    from ..blockwise import LABELS_HALO

    name, _, source = labels_source(sdata, key)
    result = morphology_blocks(source, block_size=_block_size(block_size), halo=LABELS_HALO)
    if not inplace:
        return result
    table = get_table(sdata, Key.prefix(name))
    ids = table.obs[INSTANCE_KEY].to_numpy() if INSTANCE_KEY in table.obs else table.obs_names.astype(np.int64)
    aligned = result.reindex(pd.Index(np.asarray(ids, dtype=np.int64)))
    for col in MORPHOLOGY_COLUMNS:
        table.obs[col] = aligned[col].to_numpy()
    n_missing = int(aligned["area"].isna().sum())
    if n_missing:
        logger.warning("%d cells of the table of %r are not in its labels; their morphology is NaN.", n_missing, key)
    return None


def pixel_coverage(
    sdata: sd.SpatialData,
    key: str,
    *,
    image_key: str | None = None,
    channel: str | int | None = None,
    bins: int | Sequence[float] = 10,
    block_size: int | None = None,
) -> pd.DataFrame:
    """Proportion of pixels inside cells for each level of pixel value (GeneSegNet paper, Fig. 2d).

    Pixels are grouped by the value of the (nucleus) image; by default into ``bins`` quantile bins
    of equal pixel counts, which depend on the image only, so several segmentations of the same image
    share the bins. A good segmentation covers most bright pixels and few dark ones.

    Parameters
    ----------
    sdata
        SpatialData object holding the segmentation and the image.
    key
        Prefix of the segmentation, or a labels element name.
    image_key
        Image element; may be omitted when there is exactly one.
    channel
        Channel of a multi-channel image.
    bins
        Number of quantile bins, or explicit bin edges (left-closed, the last one closed).
    block_size
        Side of the blocks (default ``gsn.blockwise.BLOCK_SIZE``); the result does not depend on it.
        Integer images are counted as histograms; a float image keeps one value per pixel for its
        quantiles.

    Returns
    -------
    Tidy DataFrame, one row per bin: ``bin``, ``lower``, ``upper``, ``n_pixels``, ``n_in_cells`` and
    ``fraction`` (= ``n_in_cells / n_pixels``).
    """
    _, _, source = labels_source(sdata, key)
    image = image_source(sdata, image_key, channel, source.shape)
    return pixel_coverage_blocks(source, image, bins=bins, block_size=_block_size(block_size))


def rna_coverage(
    sdata: sd.SpatialData,
    key: str,
    *,
    image_key: str | None = None,
    channel: str | int | None = None,
    points_key: str | None = None,
    bins: int | Sequence[float] = 10,
    block_size: int | None = None,
) -> pd.DataFrame:
    """Proportion of transcripts inside cells by the pixel value under them (GeneSegNet paper, Fig. 2e).

    Transcripts are grouped by the image value of their pixel, by default into ``bins`` quantile
    bins of equal transcript counts. RNA in dark pixels (cytoplasm) is what image-only methods miss.

    Parameters
    ----------
    sdata
        SpatialData object holding the segmentation, the image and the transcripts.
    key
        Prefix of the segmentation, or a labels element name.
    image_key
        Image element; may be omitted when there is exactly one.
    channel
        Channel of a multi-channel image.
    points_key
        Transcripts element; may be omitted when there is exactly one.
    bins
        Number of quantile bins, or explicit bin edges.
    block_size
        Side of the blocks (default ``gsn.blockwise.BLOCK_SIZE``); the result does not depend on it.

    Returns
    -------
    Tidy DataFrame, one row per bin: ``bin``, ``lower``, ``upper``, ``n_transcripts``, ``n_in_cells`` and
    ``fraction``.
    """
    name, element, source = labels_source(sdata, key)
    image = image_source(sdata, image_key, channel, source.shape)
    index = transcript_index(sdata, points_key, element, name)
    return rna_coverage_blocks(source, image, index, bins=bins, block_size=_block_size(block_size))


def genes_per_cell(
    data: ad.AnnData | sd.SpatialData,
    key: str | None = None,
    *,
    bins: int | Sequence[float] | None = None,
    layer: str | None = None,
    key_added: str | None = "n_genes",
) -> pd.DataFrame:
    """Count the detected genes per cell and give their histogram (GeneSegNet paper, Fig. 2f).

    A gene is detected in a cell when it has at least one read there.

    Parameters
    ----------
    data
        A cells x genes AnnData of counts, or a SpatialData object with ``key``.
    key
        Prefix of the segmentation whose table ``<key>_table`` to use (SpatialData input).
    bins
        ``None``: one row per number of genes (0, 1, 2, ...); an int: that many equal-width bins; a
        sequence: explicit bin edges.
    layer
        Layer holding the counts instead of ``X``.
    key_added
        ``obs`` column receiving the per-cell numbers; ``None`` writes nothing.

    Returns
    -------
    Tidy histogram: ``n_genes`` (or ``lower``/``upper`` with ``bins``), ``n_cells`` and ``fraction``.
    """
    adata = _resolve_adata(data, key)
    counts = adata.layers[layer] if layer is not None else adata.X
    n_genes = n_genes_from_counts(counts) if counts is not None else np.zeros(adata.n_obs, np.int64)
    if key_added is not None:
        adata.obs[key_added] = n_genes
    return histogram_table(n_genes, bins=bins, name="n_genes")
