"""Finding and validating the elements of a SpatialData object at the boundary of every public call.

Every public function resolves its inputs here, so a user gets the same clear message wherever an
element is missing, ambiguous or of the wrong kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import spatialdata as sd
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, get_model
from xarray import DataArray, DataTree

from ._constants import RNA_CHANNEL, SopaAttrs


def _scale0(element: DataArray | DataTree) -> DataArray:
    """Full-resolution level of a (possibly multiscale) raster element."""
    if isinstance(element, DataTree):
        return next(iter(element["scale0"].values()))
    return element


def _pick(kind: str, available: Sequence[str], key: str | None, argument: str) -> str:
    if key is not None:
        if key not in available:
            listing = ", ".join(repr(k) for k in sorted(available)) or "none"
            raise KeyError(f"No {kind} element {key!r} in the SpatialData object; {kind} elements present: {listing}.")
        return key
    if len(available) == 1:
        return available[0]
    if not available:
        raise ValueError(f"The SpatialData object has no {kind} element; add one or pass the element via `{argument}`.")
    listing = ", ".join(repr(k) for k in available)
    raise ValueError(f"The SpatialData object has several {kind} elements ({listing}); choose one with `{argument}=`.")


def _from_attrs(sdata: sd.SpatialData, attr: str, available: Sequence[str]) -> str | None:
    """Return the element sopa recorded for a role in ``sdata.attrs``, when it exists in the object."""
    key = sdata.attrs.get(attr)
    return key if isinstance(key, str) and key in available else None


def _derived(name: str, element) -> bool:
    channels = list(_scale0(element).coords["c"].values)
    return channels == [RNA_CHANNEL] or name.endswith("_normalized")


def get_image(
    sdata: sd.SpatialData, image_key: str | None = None, *, channel: str | int | Sequence[str | int] | None = None
) -> tuple[str, DataArray]:
    """Return the key and full-resolution image with dims ``(c, y, x)``.

    Parameters
    ----------
    sdata
        The object to look in.
    image_key
        Name of the image element; may be omitted when the object holds exactly one image, or
        when sopa recorded one (``sdata.attrs["cell_segmentation_image"]``).
    channel
        Channel name(s) or index(es) to keep. Required to be unambiguous only by callers that need
        a single channel (see :func:`get_single_channel`).
    """
    candidates = list(sdata.images.keys())
    if image_key is None:
        image_key = _from_attrs(sdata, SopaAttrs.IMAGE, candidates)
    if image_key is None:
        # Images gsn derived from another (RNA map, normalised copy) are inputs only when named.
        candidates = [k for k in candidates if not _derived(k, sdata.images[k])] or candidates
    key = _pick("image", candidates if image_key is None else list(sdata.images.keys()), image_key, "image_key")
    element = sdata.images[key]
    if get_model(element) is not Image2DModel:
        raise ValueError(f"Image {key!r} is not 2D (dims {tuple(_scale0(element).dims)}); gsn segments 2D images.")
    image = _scale0(element)
    if image.sizes["y"] == 0 or image.sizes["x"] == 0:
        raise ValueError(f"Image {key!r} is empty (shape {tuple(image.shape)}).")
    if channel is not None:
        wanted = [channel] if isinstance(channel, str | int | np.integer) else list(channel)
        names = list(image.coords["c"].values)
        picked = []
        for ch in wanted:
            if ch in names:
                picked.append(names.index(ch))
            elif isinstance(ch, int | np.integer) and not isinstance(ch, bool) and 0 <= ch < len(names):
                picked.append(int(ch))
            else:
                raise KeyError(f"Image {key!r} has no channel {ch!r}; its channels are {names}.")
        image = image.isel(c=picked)
    return key, image


def get_single_channel(
    sdata: sd.SpatialData, image_key: str | None = None, *, channel: str | int | None = None
) -> tuple[str, DataArray]:
    """Return the key and one channel of an image as a ``(y, x)`` array, refusing to guess between channels."""
    key, image = get_image(sdata, image_key, channel=channel)
    if image.sizes["c"] != 1:
        names = list(image.coords["c"].values)
        raise ValueError(
            f"Image {key!r} has {len(names)} channels {names}; pass `channel=` to say which one is the nucleus stain."
        )
    return key, image.isel(c=0)


def get_points(sdata: sd.SpatialData, points_key: str | None = None) -> tuple[str, Any]:
    """Return the key and the (dask) dataframe of a points element, checking it has x/y and a gene column.

    Without ``points_key``: the only points element, or the one sopa recorded
    (``sdata.attrs["transcripts_dataframe"]``).
    """
    if points_key is None:
        points_key = _from_attrs(sdata, SopaAttrs.POINTS, list(sdata.points.keys()))
    key = _pick("points", list(sdata.points.keys()), points_key, "points_key")
    points = sdata.points[key]
    if get_model(points) is not PointsModel:  # pragma: no cover - spatialdata guarantees the model
        raise ValueError(f"Element {key!r} is not a points element.")
    missing = [c for c in ("x", "y") if c not in points.columns]
    if missing:
        raise ValueError(f"Points {key!r} have no {' or '.join(missing)} column; columns are {list(points.columns)}.")
    gene_column(points, key)
    return key, points


def gene_column(points: Any, key: str = "points") -> str:
    """Name of the gene column: the element's ``feature_key``, else a column named ``gene``."""
    attrs = points.attrs.get("spatialdata_attrs", {})
    col = attrs.get("feature_key") or ("gene" if "gene" in points.columns else None)
    if col is None or col not in points.columns:
        raise ValueError(
            f"Points {key!r} have no gene column: set `feature_key` when parsing them "
            "(PointsModel.parse(..., feature_key='gene')) or add a column named 'gene'."
        )
    return col


def get_labels(sdata: sd.SpatialData, labels_key: str | None = None) -> tuple[str, DataArray]:
    """Return the key and full-resolution ``(y, x)`` labels array."""
    key = _pick("labels", list(sdata.labels.keys()), labels_key, "labels_key")
    element = sdata.labels[key]
    if get_model(element) is not Labels2DModel:
        raise ValueError(f"Labels {key!r} are not 2D; gsn works on 2D labels.")
    return key, _scale0(element)


def label_values(sdata: sd.SpatialData, labels_key: str | None = None) -> tuple[str, DataArray, np.ndarray]:
    """Key, element and validated values of a labels element: the one check of labels at every public call.

    The values are integer cell ids, 0 for background, no negatives and no ids far above the number
    of pixels (see :func:`gsn.tl._metrics_core.as_labels`); anything else raises an error naming the element.
    """
    from .tl._metrics_core import as_labels

    key, element = get_labels(sdata, labels_key)
    if element.dtype.kind not in "iu":  # refuse before loading the values
        as_labels(np.zeros((1, 1), element.dtype), name=f"Labels {key!r}", allow_mask=False)
    return key, element, as_labels(np.asarray(element.values), name=f"Labels {key!r}", allow_mask=False)


def label_source(sdata: sd.SpatialData, labels_key: str | None = None):
    """Key, element and a window reader of a labels element, validating each window as it is read.

    The lazy counterpart of :func:`label_values` for whole-slide steps: nothing is loaded until a
    block reads its window, and each window is checked as :func:`gsn.tl._metrics_core.as_labels`
    checks a whole image (integer ids, no negatives, ids not far above the image's pixel count).
    """
    from .blockwise import ArraySource
    from .tl._metrics_core import MIN_MAX_LABEL_ID, as_labels

    key, element = get_labels(sdata, labels_key)
    name = f"Labels {key!r}"
    if element.dtype.kind not in "iu":  # refuse before loading the values
        as_labels(np.zeros((1, 1), element.dtype), name=name, allow_mask=False)
    n_pixels = int(element.sizes["y"]) * int(element.sizes["x"])

    def check(values: np.ndarray) -> np.ndarray:
        values = as_labels(values, name=name, allow_mask=False, large_ids=True)
        top = int(values.max()) if values.size else 0
        if top > max(n_pixels, MIN_MAX_LABEL_ID):
            raise ValueError(
                f"{name}: the largest cell id is {top}, far above the number of pixels ({n_pixels}); gsn indexes "
                "cells by id, so renumber them first, e.g. `skimage.segmentation.relabel_sequential(labels)[0]`."
            )
        return values

    return key, element, ArraySource(element, check=check)


def check_free(
    sdata: sd.SpatialData, names: Sequence[str], *, overwrite: bool, inputs: Sequence[str | None] = ()
) -> None:
    """Refuse to replace existing elements unless ``overwrite=True``, and the inputs of the call always.

    spatialdata requires names to be unique across element types, so any element type counts.
    ``inputs`` are the elements the call reads; ``overwrite=True`` may replace an earlier result,
    never one of them.
    """
    clash = [n for n in names if n in {i for i in inputs if i is not None}]
    if clash:
        raise ValueError(
            f"Element(s) {clash} are inputs of this call and would be replaced by its results, even with "
            "`overwrite=True`; choose another `key_added`."
        )
    if overwrite:
        return
    taken = [n for n in names if n in sdata]
    if taken:
        raise ValueError(
            f"Element(s) {taken} already exist; pass `overwrite=True` to replace them or choose another `key_added`."
        )


def check_points_column(points: Any, points_key: str, column: str, *, overwrite: bool) -> None:
    """Refuse a new points column that exists (unless ``overwrite=True``) or is one of the points' own columns.

    Coordinates, the gene column and the instance key are what the points are; ``overwrite=True``
    replaces an earlier result column, never one of those.
    """
    attrs = points.attrs.get("spatialdata_attrs", {})
    own = {"x", "y", "z", attrs.get("feature_key"), attrs.get("instance_key"), "gene"}
    if column in own:
        raise ValueError(
            f"Column {column!r} of points {points_key!r} holds their coordinates, genes or ids and is never "
            "replaced, even with `overwrite=True`; choose another `key_added`."
        )
    if column in points.columns and not overwrite:
        raise ValueError(
            f"Points {points_key!r} already have a column {column!r}; pass `overwrite=True` or choose another "
            "`key_added`."
        )
