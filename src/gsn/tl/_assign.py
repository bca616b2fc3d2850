"""Transcript -> cell assignment by label lookup (the label under each molecule)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import spatialdata as sd

from .._constants import Key
from .._elements import check_points_column, get_labels, get_points, label_source


def lookup_labels(labels: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Label value at pixel ``(floor(y), floor(x))`` for each point; 0 for points outside the image."""
    h, w = labels.shape
    rows = np.floor(y).astype(np.int64)
    cols = np.floor(x).astype(np.int64)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    out = np.zeros(len(rows), dtype=labels.dtype if labels.dtype.kind in "iu" else np.int64)
    out[inside] = labels[rows[inside], cols[inside]]
    return out


def transcript_cell_ids(sdata: sd.SpatialData, labels_key: str, points_key: str | None = None) -> np.ndarray:
    """Cell id (label value) of every transcript of ``points_key`` in the frame of ``labels_key``, in row order."""
    return _cell_ids(sdata, labels_key, points_key)


def _cell_ids(sdata: sd.SpatialData, labels_key: str | None, points_key: str | None) -> np.ndarray:
    """Cell id under every transcript, read block by block (0 off the labels)."""
    from ..blockwise import BLOCK_SIZE
    from ._cells import transcript_index
    from ._metrics_blocks import labels_at_blocks

    labels_key, element, source = label_source(sdata, labels_key)
    index = transcript_index(sdata, points_key, element, labels_key)
    return labels_at_blocks(source, index, block_size=BLOCK_SIZE)


def set_points_column(sdata: sd.SpatialData, points_key: str, column: str, values: np.ndarray) -> None:
    """Attach a per-row array as a new column of a (dask) points element, keeping its metadata.

    Each partition gets its own slice of ``values`` as a task of its own, so the column stays
    aligned with the rows however the element is read later (``points.partitions[i]`` included:
    a column computed from ``partition_info`` would see a selected partition numbered 0). The
    element's ``attrs`` (transformations, feature and instance keys) are carried over.
    """
    import dask
    import dask.dataframe as dd

    points = sdata.points[points_key]
    lengths = points.map_partitions(len).compute(scheduler="synchronous").to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] != len(values):
        raise ValueError(f"{len(values)} values for {offsets[-1]} transcripts in {points_key!r}.")

    meta = points._meta.copy()
    meta[column] = values[:0]
    parts = [
        dask.delayed(_with_column)(part, column, values[offsets[i] : offsets[i + 1]])
        for i, part in enumerate(points.to_delayed())
    ]
    out = dd.from_delayed(parts, meta=meta, divisions=points.divisions, verify_meta=False)
    out.attrs.update(points.attrs)
    sdata.points[points_key] = out


def _with_column(part: pd.DataFrame, column: str, values: np.ndarray) -> pd.DataFrame:
    part = part.copy()
    part[column] = values
    return part


def assign_transcripts(
    sdata: sd.SpatialData,
    labels_key: str,
    points_key: str | None = None,
    *,
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
) -> np.ndarray | None:
    """Assign every transcript to the cell whose label lies under it.

    Transcripts are mapped into the labels' pixel frame through spatialdata's transformations and
    read at pixel ``(floor(y), floor(x))``. Molecules on background, or outside the labels, get 0.

    Parameters
    ----------
    sdata
        SpatialData object with the labels and the transcripts.
    labels_key
        Labels element (e.g. ``"genesegnet_labels"``).
    points_key
        Transcripts element; may be omitted when there is exactly one.
    key_added
        Name of the new points column; ``"<prefix>_cell_id"`` for labels named ``"<prefix>_labels"``.
    overwrite
        Replace an existing column of that name. Vendor columns such as ``cell_id`` are never replaced
        unless named here explicitly with ``overwrite=True``.
    inplace
        Add the column to the points element; otherwise return the ids.

    Returns
    -------
    int64 array of cell ids, one per transcript in row order, when ``inplace=False``.
    """
    labels_key, _ = get_labels(sdata, labels_key)
    points_key, points = get_points(sdata, points_key)
    column = key_added or Key.cell_id(Key.prefix(labels_key))
    if inplace:
        check_points_column(points, points_key, column, overwrite=overwrite)
    ids = _cell_ids(sdata, labels_key, points_key)
    if not inplace:
        return ids
    set_points_column(sdata, points_key, column, ids)
    from ..io._write import warn_points_column_in_memory

    warn_points_column_in_memory(sdata, points_key, column)
    return None
