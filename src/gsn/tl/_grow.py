"""``gsn.tl.grow_cells``: whole cells from nucleus labels and the transcripts."""

from __future__ import annotations

import numpy as np
import spatialdata as sd
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

from .._constants import Key
from .._elements import label_values
from .._logging import logger
from .._transcripts import check_coordinates

GROWN_SUFFIX = "grown"


def growth_inputs(sdata: sd.SpatialData, labels_element, labels_name: str, points_key: str | None, shape):
    """Transcript pixel coordinates in the labels' frame, integer gene codes, and the labels' pixel size."""
    from ._cells import transcripts_in_element
    from ._segment import image_pixel_size

    x, y, codes, _, points_key = transcripts_in_element(sdata, labels_element, labels_name, points_key)
    inside = check_coordinates(x, y, shape, points_key=points_key, image_key=labels_name)
    return x[inside], y[inside], codes[inside], image_pixel_size(labels_element), points_key


def grow_cells(
    sdata: sd.SpatialData,
    labels_key: str,
    points_key: str | None = None,
    *,
    key_added: str | None = None,
    max_distance: float = 8.0,
    quantile: float = 0.5,
    composition: bool = True,
    pixel_size: float | None = None,
    seed: int = 0,
    overwrite: bool = False,
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
    pixel_size
        Microns per pixel of the labels, overriding their transformation.
    seed
        Seed of the clustering into cell types.
    overwrite
        Replace existing elements/columns with the same names.

    Examples
    --------
    >>> import gsn
    >>> sdata = gsn.datasets.synthetic(shape=(128, 128), seed=0)
    >>> gsn.tl.grow_cells(sdata, "prior_labels")
    >>> "prior_grown_labels" in sdata
    True
    """
    from ..models._growth import grow_labels
    from ._cells import _check_outputs, _default_points, _segmentation_elements, _write

    if not 0 < quantile < 1:
        raise ValueError(f"`quantile` must be in (0, 1), got {quantile!r}.")
    if not np.isfinite(max_distance) or max_distance <= 0:
        raise ValueError(f"`max_distance` must be a positive number of microns, got {max_distance!r}.")
    if pixel_size is not None and (not np.isfinite(pixel_size) or pixel_size <= 0):
        raise ValueError(f"`pixel_size` must be a positive number of microns per pixel, got {pixel_size!r}.")
    labels_key, element, nuclei = label_values(sdata, labels_key)
    points_key = _default_points(sdata, points_key)
    if points_key is None:
        raise ValueError("The SpatialData object has no points element: growing cells needs the transcripts.")
    key = key_added or f"{Key.prefix(labels_key)}_{GROWN_SUFFIX}"
    if Key.labels(key) == labels_key:
        raise ValueError(f"`key_added={key!r}` would replace the input labels {labels_key!r}; choose another prefix.")
    _check_outputs(sdata, key, points_key, overwrite=overwrite, with_labels=True, inputs=(labels_key,))
    x, y, genes, own_px, points_key = growth_inputs(sdata, element, labels_key, points_key, nuclei.shape)
    px = pixel_size if pixel_size is not None else own_px
    if px is None:
        logger.warning(
            "The pixel size of %r is unknown (identity transformation): taking 0.2 µm per pixel for "
            "`max_distance`. Pass `pixel_size=` if that is wrong.", labels_key,
        )  # fmt: skip
    grown, report = grow_labels(
        nuclei, x, y, genes if composition else None, pixel_size=px, max_distance=max_distance,
        quantile=quantile, composition=composition, seed=seed,
    )  # fmt: skip
    new = Labels2DModel.parse(grown, dims=("y", "x"), transformations=get_transformation(element, get_all=True))
    uns = {"method": "grow_cells", "growth": report.as_dict(), "max_distance": max_distance, "quantile": quantile}
    from ..blockwise import ArraySource, Scratch

    with Scratch() as scratch:
        boundaries, table, points_key, ids, _ = _segmentation_elements(
            sdata, ArraySource(grown), new, labels_name=Key.labels(key), points_key=points_key, key=key, uns=uns,
            scratch=scratch,
        )  # fmt: skip
    elements = {Key.labels(key): new, Key.boundaries(key): boundaries, Key.table(key): table}
    _write(sdata, key, elements, points_key, ids, overwrite=overwrite)
    logger.info("%s: grew %d cells from %r", key, table.n_obs, labels_key)
