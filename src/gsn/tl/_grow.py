"""``gsn.tl.grow_cells``: whole cells from nucleus labels and the transcripts."""

from __future__ import annotations

from typing import Literal

import numpy as np
import spatialdata as sd
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

from .._constants import Key
from .._elements import label_source
from .._logging import logger
from ..blockwise import LABELS_HALO

GROWN_SUFFIX = "grown"


def grow_cells(
    sdata: sd.SpatialData,
    labels_key: str,
    points_key: str | None = None,
    *,
    key_added: str | None = None,
    max_distance: float = 8.0,
    quantile: float = 0.5,
    composition: bool = True,
    kind: Literal["auto", "nuclei", "cells"] = "auto",
    pixel_size: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
    block_size: int | None = None,
    client=None,
) -> None:
    """Grow nucleus labels into whole cells, reading how far each cell reaches from its transcripts.

    Each nucleus keeps its pixels and grows, sector by sector around it, as far as the transcript
    density says it is inside a cell rather than in background (Poisson likelihood ratio with a prior
    on extents learned from the sample); then gene composition moves the borders between touching
    cells toward the cell whose type explains the molecules best. Every rate is estimated from the
    data; see :func:`gsn.models.grow_labels` for the method.

    Writes a full segmentation with prefix ``key_added`` (default ``"<prefix>_grown"`` for labels
    named ``"<prefix>_labels"``): ``<key>_labels`` (same ids as the nuclei, the labels'
    transformations), ``<key>_boundaries``, ``<key>_table`` and the ``<key>_cell_id`` column; the
    estimated rates, sectors and types go into ``table.uns["genesegnet"]["growth"]``.

    Parameters
    ----------
    sdata
        SpatialData object with the labels and the transcripts.
    labels_key
        Nucleus-like labels to grow (a prior, a watershed result, a GeneSegNet segmentation).
    points_key
        Transcripts; may be omitted when there is exactly one points element.
    key_added
        Prefix of the elements written.
    max_distance
        How far a cell may extend beyond its nucleus, in microns (the units of the labels'
        coordinate system; pixels are taken as 0.2 µm when that is unknown, see ``pixel_size``).
    quantile
        Posterior quantile of each extent, in (0, 1): higher gives larger cells.
    composition
        Let gene composition move the borders between touching cells.
    kind
        What the labels are. ``"nuclei"``: each keeps its pixels and grows. ``"cells"``: they already
        are whole cells (a vendor's cells, a network trained on cells); each is eroded by 1.5 µm to
        its core and grown from there, so the transcripts redraw its border instead of only adding
        to it. ``"auto"`` (default): cells when the labels hold at least 0.6 of the transcripts on the
        image (the rule of :func:`gsn.tl.train`'s ``prior="auto"``); the decision and the fraction
        go into ``uns``.
    pixel_size
        Microns per pixel of the labels, overriding their transformation.
    seed
        Seed of the clustering into cell types.
    overwrite
        Replace existing elements/columns with the same names.
    block_size
        Side of the square blocks (pixels; default 1024) the labels are grown in: memory is bounded by
        the block, and the result does not depend on it.
    client
        A ``dask.distributed.Client`` to run the blocks on.

    Examples
    --------
    >>> import gsn
    >>> sdata = gsn.datasets.synthetic(shape=(128, 128), seed=0)
    >>> gsn.tl.grow_cells(sdata, "prior_labels")
    >>> "prior_grown_labels" in sdata
    True
    """
    from .._settings import settings
    from ..blockwise import BLOCK_SIZE, Scratch, warm_up
    from ..models._growth import KINDS, grow_blockwise
    from ._cells import (
        _check_outputs,
        _default_points,
        _segmentation_elements,
        _write,
        labels_from_raster,
        settle_labels,
        transcript_index,
    )  # fmt: skip
    from ._segment import image_pixel_size

    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")
    if not 0 < quantile < 1:
        raise ValueError(f"`quantile` must be in (0, 1), got {quantile!r}.")
    if not np.isfinite(max_distance) or max_distance <= 0:
        raise ValueError(f"`max_distance` must be a positive number of microns, got {max_distance!r}.")
    if pixel_size is not None and (not np.isfinite(pixel_size) or pixel_size <= 0):
        raise ValueError(f"`pixel_size` must be a positive number of microns per pixel, got {pixel_size!r}.")
    block_size = BLOCK_SIZE if block_size is None else int(block_size)
    labels_key, element, source = label_source(sdata, labels_key)
    points_key = _default_points(sdata, points_key)
    if points_key is None:
        raise ValueError("The SpatialData object has no points element: growing cells needs the transcripts.")
    key = key_added or f"{Key.prefix(labels_key)}_{GROWN_SUFFIX}"
    if Key.labels(key) == labels_key:
        raise ValueError(f"`key_added={key!r}` would replace the input labels {labels_key!r}; choose another prefix.")
    _check_outputs(sdata, key, points_key, overwrite=overwrite, with_labels=True, inputs=(labels_key,))
    px = pixel_size if pixel_size is not None else image_pixel_size(element)
    if px is None:
        logger.warning(
            "The pixel size of %r is unknown (identity transformation): taking 0.2 µm per pixel for "
            "`max_distance`. Pass `pixel_size=` if that is wrong.", labels_key,
        )  # fmt: skip
    transformations = get_transformation(element, get_all=True)
    warm_up(client)
    with Scratch.shared_with(client, sdata.path) as scratch:
        index = transcript_index(sdata, points_key, element, labels_key, scratch=scratch)
        grown, report, halo = grow_blockwise(
            source, index, pixel_size=px, max_distance=max_distance, quantile=quantile, composition=composition,
            kind=kind, seed=seed, scratch=scratch, block_size=block_size, client=client, progress=settings.progress,
        )  # fmt: skip
        uns = {"method": "grow_cells", "growth": report.as_dict(), "max_distance": max_distance, "quantile": quantile}
        out = scratch.raster("labels", source.shape, np.int32, chunk=block_size, keep=True)
        boundaries, table, points_key, ids, _ = _segmentation_elements(
            sdata, grown, element, labels_name=Key.labels(key), points_key=points_key, key=key, uns=uns,
            index=index, out=out, block_size=block_size, halo=max(halo, LABELS_HALO), client=client,
            scratch=scratch,
        )  # fmt: skip
    new = Labels2DModel.parse(labels_from_raster(out), dims=("y", "x"), transformations=transformations)
    elements = {Key.labels(key): new, Key.boundaries(key): boundaries, Key.table(key): table}
    _write(sdata, key, elements, points_key, ids, overwrite=overwrite)
    settle_labels(sdata, Key.labels(key), out)
    logger.info("%s: grew %d cells from %r", key, table.n_obs, labels_key)
