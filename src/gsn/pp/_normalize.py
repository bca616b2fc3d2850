"""Whole-image robust intensity scaling (the network input ``I`` in [0, 1])."""

from __future__ import annotations

import dask.array as da
import numpy as np
import spatialdata as sd
from spatialdata.models import Image2DModel
from spatialdata.transformations import get_transformation

from .._elements import check_free, get_single_channel
from .._logging import logger

# Percentiles are estimated on a regular subsample: a whole slide has billions of pixels, and the
# 1st/99.8th percentiles of a few million evenly spread pixels differ from the exact ones by far
# less than one grey level.
_MAX_SAMPLE = 4_000_000


def percentiles(arr, low: float = 1.0, high: float = 99.8) -> tuple[float, float]:
    """Robust low/high intensity levels of a whole image (numpy or dask), from an even subsample.

    The subsample is every ``step``-th pixel along both axes, read one band of rows at a time; integer
    images are summarised by a histogram of the sample (the same percentiles as ``np.percentile``, in
    a few MB whatever the slide's size).
    """
    h, w = arr.shape[-2:]
    step = max(1, int(np.ceil(np.sqrt(h * w / _MAX_SAMPLE))))
    band = step * max(1, 2048 // step)
    from ..blockwise import serial_io

    pieces = []
    with serial_io():
        for r0 in range(0, h, band):
            piece = arr[..., r0 : r0 + band : step, ::step]
            pieces.append(np.asarray(piece.compute(scheduler="synchronous") if isinstance(piece, da.Array) else piece))
    sample = np.concatenate([p.ravel() for p in pieces])
    del pieces
    if sample.dtype.kind in "ub" or (sample.dtype.kind == "i" and sample.size and sample.min() >= 0):
        if sample.size == 0:
            raise ValueError("The image has no finite pixel values.")
        return _integer_percentiles(sample.astype(np.int64, copy=False), (low, high))
    sample = sample.astype(np.float64, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise ValueError("The image has no finite pixel values.")
    lo, hi = np.percentile(sample, [low, high])
    return float(lo), float(hi)


def _integer_percentiles(sample: np.ndarray, qs) -> tuple[float, ...]:
    """``np.percentile(sample, qs)`` (linear interpolation) of non-negative integers, from their histogram."""
    cumulative = np.cumsum(np.bincount(sample))
    n = int(cumulative[-1])

    def order_statistic(k: int) -> float:  # the k-th smallest value (0-based)
        return float(np.searchsorted(cumulative, k, side="right"))

    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        a, b = order_statistic(lo), order_statistic(min(lo + 1, n - 1))
        out.append(a + (pos - lo) * (b - a))
    return tuple(out)


def warn_missing_pixels(arr, image_key: str) -> int:
    """Count the NaN or infinite pixels of an image (numpy or dask) and warn when there are any.

    Such pixels are treated as missing: :func:`normalize_array` maps them to 0 (background), so
    the rest of the image is segmented as usual. Integer images cannot have any and cost nothing.
    """
    if np.dtype(arr.dtype).kind not in "fc":
        return 0
    bad = ~da.isfinite(arr) if isinstance(arr, da.Array) else ~np.isfinite(np.asarray(arr))
    n = int(bad.sum().compute() if isinstance(bad, da.Array) else bad.sum())
    if n:
        total = int(np.prod(arr.shape))
        if n == total:
            raise ValueError(f"Image {image_key!r} has no finite pixel values (all {total} are NaN or infinite).")
        logger.warning(
            "Image %r has %d NaN or infinite pixel(s) (%.3g%% of %d); they are treated as missing (background).",
            image_key, n, 100 * n / total, total,
        )  # fmt: skip
    return n


def normalize_array(arr, low: float = 1.0, high: float = 99.8, *, levels: tuple[float, float] | None = None):
    """Scale an image to [0, 1] by whole-image percentiles, clipping outside them.

    Parameters
    ----------
    arr
        2D (or ``(c, y, x)``) numpy or dask array.
    low, high
        Percentiles mapped to 0 and 1.
    levels
        Precomputed ``(lo, hi)`` intensities (e.g. from :func:`percentiles`) to use instead.

    Returns
    -------
    float32 array of the same shape and kind (numpy in, numpy out; dask in, dask out). A flat
    image (``hi <= lo``) becomes all zeros rather than dividing by zero. NaN or infinite pixels
    are missing values and become 0, so they cannot spread through filters or the network.
    """
    lo, hi = levels if levels is not None else percentiles(arr, low, high)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    if isinstance(arr, da.Array):
        out = da.clip((arr.astype(np.float32) - np.float32(lo)) * np.float32(scale), 0, 1)
        return da.where(da.isfinite(arr), out, np.float32(0)) if np.dtype(arr.dtype).kind in "fc" else out
    arr = np.asarray(arr)
    out = (arr.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    out = np.clip(out, 0, 1, out=out)
    if arr.dtype.kind in "fc":
        out[~np.isfinite(arr)] = 0
    return out


def normalize(
    sdata: sd.SpatialData,
    image_key: str | None = None,
    *,
    channel: str | int | None = None,
    low: float = 1.0,
    high: float = 99.8,
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
):
    """Scale a nucleus-stain image to [0, 1] with one robust normalisation for the whole image.

    The low and high percentiles are taken over the whole image (never per tile, which would put
    seams between tiles) and values outside them are clipped.

    Parameters
    ----------
    sdata
        SpatialData object with the image.
    image_key
        Image element; may be omitted when there is exactly one.
    channel
        Channel to normalise when the image has several.
    low, high
        Percentiles mapped to 0 and 1.
    key_added
        Name of the new image element; default ``"<image_key>_normalized"``.
    overwrite
        Replace an existing element of that name.
    inplace
        Add the element to ``sdata`` (and to its zarr store when backed); otherwise return it.

    Returns
    -------
    The normalised image element (float32, lazy) when ``inplace=False``, else ``None``.
    """
    image_key, image = get_single_channel(sdata, image_key, channel=channel)
    warn_missing_pixels(image.data, image_key)
    lo, hi = percentiles(image.data, low, high)
    logger.info("Normalising %r: percentiles %.3g..%.3g -> 0..1", image_key, lo, hi)
    data = normalize_array(image.data, levels=(lo, hi))[None]
    element = Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        c_coords=[str(image.coords["c"].item())],
        transformations=get_transformation(image, get_all=True),
    )
    if not inplace:
        return element
    from ..io._write import add_elements

    name = key_added or f"{image_key}_normalized"
    check_free(sdata, [name], overwrite=overwrite, inputs=(image_key,))
    add_elements(sdata, {name: element}, overwrite=overwrite)
    return None
