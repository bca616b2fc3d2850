"""From a label image to a complete segmentation: labels, polygons, a counts table and a points column.

One driver for every source of labels (prior, watershed, GeneSegNet, imported Cellpose): everything is
computed first and written last, so a failure leaves the SpatialData as it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import spatialdata as sd
from spatialdata.models import Labels2DModel, ShapesModel
from spatialdata.transformations import get_transformation

from .._constants import INSTANCE_KEY, UNS_KEY, Key, SopaAttrs
from .._elements import check_free, check_points_column, get_image, get_points, label_source
from .._logging import logger
from ..blockwise import Scratch
from ..io._write import add_elements, warn_points_column_in_memory
from ._aggregate import build_table, global_affine
from ._assign import set_points_column


def transcript_index(
    sdata: sd.SpatialData, points_key: str | None, frame, frame_name: str, *, scratch=None, cache: dict | None = None
):
    """Return the transcripts of ``points_key`` in the pixel frame of the raster ``frame``, readable by window.

    ``cache``: a dict kept by the caller; rasters on the same pixel grid then share one index.
    """
    from .._transcripts import points_to_pixel_matrix
    from ..blockwise import TranscriptIndex

    points_key, points = get_points(sdata, points_key)
    matrix = points_to_pixel_matrix(points, frame, points_key=points_key, image_key=frame_name)
    shape = (frame.sizes["y"], frame.sizes["x"])
    grid = (points_key, np.asarray(matrix, np.float64).tobytes(), shape)
    if cache is not None and grid in cache:
        return cache[grid]
    index = TranscriptIndex.from_points(
        points, matrix, shape, points_key=points_key, image_key=frame_name, scratch=scratch
    )
    if cache is not None:
        cache[grid] = index
    return index


def _segmentation_elements(
    sdata: sd.SpatialData,
    source,
    frame,
    *,
    labels_name: str,
    points_key: str | None,
    key: str,
    uns: dict | None,
    with_boundaries: bool = True,
    region: str | None = None,
    index=None,
    out=None,
    renumber: bool = False,
    block_size: int | None = None,
    halo: int | None = None,
    client=None,
    scratch=None,
):
    """Compute boundaries, table and per-transcript ids for labels read by window from ``source`` (no writing).

    ``frame`` is an element in the labels' pixel frame (the labels, or the image they were made on):
    its transformations place the transcripts and give the table's coordinates. The table annotates
    the labels element ``region`` (default ``<key>_labels``). With ``renumber=True`` the cells are
    numbered ``1..n`` in the order of their ids, and the returned lookup table maps old ids to new ones
    (to apply to the labels); otherwise it is ``None``.
    """
    from ..blockwise import BLOCK_SIZE, LABELS_HALO
    from ._cells_pass import cells_pass, relabel
    from ._segment import image_pixel_size

    if points_key is not None and index is None:
        index = transcript_index(sdata, points_key, frame, labels_name, scratch=scratch)
    genes = index.genes if index is not None else pd.Index([])
    cells = cells_pass(
        source, index=index, n_genes=len(genes), out=out, block_size=block_size or BLOCK_SIZE,
        halo=LABELS_HALO if halo is None else halo, polygons=with_boundaries, client=client,
        workers_read=getattr(scratch, "shared", False),
    )  # fmt: skip
    lut = None
    if renumber:
        old = cells.stats.index.to_numpy()
        lut = np.zeros(int(old.max()) + 1 if len(old) else 1, dtype=np.int32)
        lut[old] = np.arange(1, len(old) + 1, dtype=np.int32)
        cells = relabel(cells, lut)
    boundaries = None
    if with_boundaries and len(cells.polygons):
        polygons = cells.polygons
        # The id as a column too: sopa.aggregate re-indexes the polygons (Xenium Explorer ids), and
        # this column is what still joins them to the labels and to gsn's table afterwards.
        polygons[INSTANCE_KEY] = polygons.index.to_numpy()
        transformations = dict(get_transformation(frame, get_all=True))
        boundaries = ShapesModel.parse(polygons, transformations=transformations)
    params = {"labels": labels_name, "points": points_key or "", "n_cells": len(cells.stats)}
    params.update(uns or {})
    table = build_table(
        cells.stats, cells.counts, genes, region=region or Key.labels(key), uns={UNS_KEY: params},
        affine=global_affine(frame), pixel_size=image_pixel_size(frame),
    )  # fmt: skip
    return boundaries, table, points_key, cells.transcript_cells, lut


def _write(sdata, key, elements, points_key, ids, *, overwrite: bool, image_key: str | None = None) -> None:
    if elements.get(Key.boundaries(key)) is None:
        # spatialdata cannot hold an empty shapes element; an empty segmentation keeps labels and table,
        # and drops the boundaries of an earlier result it replaces (None: remove).
        elements.pop(Key.boundaries(key), None)
        if overwrite and Key.boundaries(key) in sdata:
            elements[Key.boundaries(key)] = None
    # The table goes last: whoever sees the table sees the elements it describes.
    table = elements.pop(Key.table(key), None)
    elements = {**elements, Key.table(key): table} if table is not None else elements
    # sopa's registry of roles: its aggregate, explorer export and report then find this result.
    attrs = {SopaAttrs.BOUNDARIES: Key.boundaries(key)} if Key.boundaries(key) in elements else {}
    if points_key is not None and SopaAttrs.POINTS not in sdata.attrs:
        attrs[SopaAttrs.POINTS] = points_key
    if image_key is not None and SopaAttrs.IMAGE not in sdata.attrs:
        attrs[SopaAttrs.IMAGE] = image_key
    add_elements(sdata, elements, overwrite=overwrite, attrs=attrs)
    if ids is not None:
        set_points_column(sdata, points_key, Key.cell_id(key), ids)
        warn_points_column_in_memory(sdata, points_key, Key.cell_id(key))


def labels_from_raster(out, lut: np.ndarray | None = None):
    """Return the labels a cells pass wrote into ``out`` (renumbered by ``lut``): numpy, or dask when on disk."""
    if out.in_memory:
        labels = out.to_numpy()
        if lut is not None:
            np.take(lut, labels, out=labels)
        return labels
    labels = out.to_dask()
    return labels if lut is None else labels.map_blocks(lambda b: lut[b], dtype=np.int32)


def settle_labels(sdata: sd.SpatialData, name: str, out) -> None:
    """After writing: labels built on disk are read from the object's store and their scratch copy removed.

    An object that is not backed by a local zarr store keeps reading them lazily from the scratch
    folder, which then stays (said at INFO level).
    """
    import shutil

    from ..io._write import reopen_from_store

    if out.in_memory:
        return
    if reopen_from_store(sdata, name):
        shutil.rmtree(out.path, ignore_errors=True)
        try:
            out.path.parent.rmdir()
        except OSError:  # other files of the run are still there
            pass
    else:
        logger.info(
            "Labels %r are read lazily from %s (this object has no zarr store); write the object "
            "(`sdata.write(path)`) to keep them.", name, out.path,
        )  # fmt: skip


def _check_outputs(
    sdata, key: str, points_key: str | None, *, overwrite: bool, with_labels: bool, inputs: tuple = ()
) -> None:
    names = [Key.boundaries(key), Key.table(key)] + ([Key.labels(key)] if with_labels else [])
    check_free(sdata, names, overwrite=overwrite, inputs=(points_key, *inputs))
    if points_key is not None:
        _, points = get_points(sdata, points_key)
        check_points_column(points, points_key, Key.cell_id(key), overwrite=overwrite)


def _default_points(sdata: sd.SpatialData, points_key: str | None) -> str | None:
    if points_key is not None:
        return points_key
    keys = list(sdata.points.keys())
    recorded = sdata.attrs.get(SopaAttrs.POINTS)
    if isinstance(recorded, str) and recorded in keys:
        return recorded
    if len(keys) > 1:
        raise ValueError(f"The SpatialData object has several points elements ({keys}); choose one with `points_key=`.")
    return keys[0] if keys else None


def cells_from_labels(
    sdata: sd.SpatialData,
    labels_key: str,
    points_key: str | None = None,
    *,
    key_added: str | None = None,
    overwrite: bool = False,
    block_size: int | None = None,
    halo: int | None = None,
    client=None,
) -> None:
    """Turn any labels element into a full segmentation: polygons, counts table and transcript assignment.

    Writes, for prefix ``key`` (``key_added``, or ``"<prefix>"`` of a labels element named
    ``"<prefix>_labels"``):

    - ``<key>_boundaries``: polygons indexed by label id;
    - ``<key>_table``: cells x genes counts (sparse) with ``obs["region"]``, ``obs["cell_id"]``
      (== label value == polygon index), ``obs["area"]`` (pixels), ``obs["area_um2"]`` (when the
      pixel size is known), ``obs["n_transcripts"]``, ``obs["n_genes"]``, ``obsm["spatial"]``
      (centroid x, y in the units of the ``"global"`` coordinate system: µm for spatialdata-io
      data, pixels when the transformation is the identity) and ``obsm["spatial_px"]`` (centroid
      in the labels' pixel frame); the table annotates ``<key>_labels`` (region key ``"region"``,
      instance key ``"cell_id"``), which is what spatialdata-plot colours labels by;
    - ``<key>_cell_id``: a column on the transcripts with each molecule's cell (0 = none);
    - ``<key>_labels``: a reference to the labels, when ``key_added`` gives a new prefix.

    Parameters
    ----------
    sdata
        SpatialData object.
    labels_key
        Labels element to use (a prior, a watershed result, an imported segmentation ...).
    points_key
        Transcripts; may be omitted when there is exactly one points element (or none: then the
        table has no genes).
    key_added
        Prefix of the elements written.
    overwrite
        Replace existing elements/columns with the same names.
    block_size, halo
        The labels are read block by block (bounded memory): square blocks of ``block_size`` px
        (default 1024), each with ``halo`` px of context (default 256), which must exceed the largest
        cell for its polygon to be traced whole (a WARNING says when it did not).
    client
        A ``dask.distributed.Client`` to run the blocks on.
    """
    labels_key, labels_element, source = label_source(sdata, labels_key)
    key = key_added or Key.prefix(labels_key)
    points_key = _default_points(sdata, points_key)
    with_labels = Key.labels(key) != labels_key
    _check_outputs(sdata, key, points_key, overwrite=overwrite, with_labels=with_labels, inputs=(labels_key,))
    with Scratch.shared_with(client, sdata.path) as scratch:
        boundaries, table, points_key, ids, _ = _segmentation_elements(
            sdata, source, labels_element, labels_name=labels_key, points_key=points_key, key=key,
            uns={"method": "cells_from_labels"}, block_size=block_size, halo=halo, client=client, scratch=scratch,
        )  # fmt: skip
    elements = {Key.boundaries(key): boundaries, Key.table(key): table}
    if with_labels:
        elements = {Key.labels(key): sdata.labels[labels_key], **elements}
    _write(sdata, key, elements, points_key, ids, overwrite=overwrite)
    logger.info("%s: %d cells from %r", key, table.n_obs, labels_key)


def write_segmentation(
    sdata: sd.SpatialData,
    labels: np.ndarray,
    *,
    image_key: str | None = None,
    points_key: str | None = None,
    key_added: str,
    overwrite: bool = False,
    uns: dict | None = None,
) -> None:
    """Write a label image computed in an image's pixel frame as a full segmentation (see :func:`cells_from_labels`).

    The labels element gets the image's transformations, so every result overlays the image in all
    of its coordinate systems. ``uns`` is merged into ``table.uns["genesegnet"]``.
    """
    from ..blockwise import ArraySource

    image_key, image = get_image(sdata, image_key)
    shape = (image.sizes["y"], image.sizes["x"])
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"Labels of shape {labels.shape} do not match image {image_key!r} of shape {shape}.")
    points_key = _default_points(sdata, points_key)
    _check_outputs(sdata, key_added, points_key, overwrite=overwrite, with_labels=True, inputs=(image_key,))
    from ._metrics_core import as_labels

    labels = as_labels(labels, name="Labels", allow_mask=False)
    if labels.size and int(labels.max()) >= 2**31:
        raise ValueError(f"Labels have ids up to {int(labels.max())}, above the int32 range of a labels element.")
    labels = labels.astype(np.int32, copy=False)
    element = Labels2DModel.parse(labels, dims=("y", "x"), transformations=get_transformation(image, get_all=True))
    params = {"image": image_key, **(uns or {})}
    with Scratch() as scratch:
        boundaries, table, points_key, ids, _ = _segmentation_elements(
            sdata, ArraySource(labels), image, labels_name=Key.labels(key_added), points_key=points_key,
            key=key_added, uns=params, scratch=scratch,
        )  # fmt: skip
    elements = {Key.labels(key_added): element, Key.boundaries(key_added): boundaries, Key.table(key_added): table}
    _write(sdata, key_added, elements, points_key, ids, overwrite=overwrite, image_key=image_key)
    logger.info("%s: wrote %d cells", key_added, table.n_obs)


def aggregate(
    sdata: sd.SpatialData,
    labels_key: str,
    points_key: str | None = None,
    *,
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
):
    """Count transcripts per cell and gene for a labels element into an AnnData table.

    Parameters
    ----------
    sdata
        SpatialData object.
    labels_key
        Labels element defining the cells.
    points_key
        Transcripts; may be omitted when there is exactly one points element.
    key_added
        Name of the table; ``"<prefix>_table"`` for labels named ``"<prefix>_labels"``. The table
        annotates the labels ``labels_key`` (region key ``"region"``, instance key ``"cell_id"``).
    overwrite
        Replace an existing table of that name.
    inplace
        Add the table to ``sdata``; otherwise return it.

    Returns
    -------
    The table (cells x genes, sparse counts) when ``inplace=False``.
    """
    labels_key, labels_element, source = label_source(sdata, labels_key)
    prefix = Key.prefix(labels_key)
    name = key_added or Key.table(prefix)
    points_key = _default_points(sdata, points_key)
    if inplace:
        check_free(sdata, [name], overwrite=overwrite, inputs=(labels_key, points_key))
    if points_key is None:
        raise ValueError("The SpatialData object has no points element to aggregate.")
    with Scratch() as scratch:
        _, table, _, _, _ = _segmentation_elements(
            sdata, source, labels_element, labels_name=labels_key, points_key=points_key,
            key=prefix, uns={"method": "aggregate"}, with_boundaries=False, region=labels_key, scratch=scratch,
        )  # fmt: skip
    if not inplace:
        return table
    add_elements(sdata, {name: table}, overwrite=overwrite)
    return None
