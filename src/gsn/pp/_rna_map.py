"""The RNA location map ``G`` of Eq. 5: a clipped sum of unnormalised Gaussians around transcripts.

``sum_l exp(-|p - g_l|^2 / 2 sigma^2)`` over transcripts ``g_l`` equals the image of transcript counts
per pixel convolved with an unnormalised Gaussian kernel (peak 1). So the map costs one O(N) binning
and one separable O(W*H*r) filter, instead of a stack of one Gaussian per transcript; for a whole
slide the same is done lazily per chunk with a halo of the kernel radius.
"""

from __future__ import annotations

from typing import Any, Literal

import dask.array as da
import numpy as np
import spatialdata as sd
from scipy import ndimage
from spatialdata.models import Image2DModel
from spatialdata.transformations import get_transformation

from .._constants import RNA_CHANNEL, RNA_MAP_KEY
from .._elements import check_free, get_image, get_points
from .._logging import logger
from .._transcripts import transcripts_to_pixels

AUTO_SCALE_PERCENTILE = 99.0

# Above this many pixels the map is built lazily, chunk by chunk, so memory stays bounded.
_LAZY_PIXELS = 64 * 1024 * 1024


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """1D unnormalised Gaussian (peak 1) cut at ``truncate * sigma``."""
    radius = int(np.ceil(truncate * sigma))
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    return np.exp(-(d**2) / (2.0 * sigma**2)).astype(np.float32)


def _count_image(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    flat = np.bincount(rows * w + cols, minlength=h * w)
    return flat.reshape(h, w).astype(np.float32)


def _sum(counts: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Unclipped sum of unnormalised Gaussians (separable filter of the count image)."""
    out = ndimage.correlate1d(counts, kernel, axis=0, mode="constant")
    return ndimage.correlate1d(out, kernel, axis=1, mode="constant")


def _filter(counts: np.ndarray, kernel: np.ndarray, mode: str, sigma: float, scale: float = 1.0) -> np.ndarray:
    if mode == "max":
        # Distance to the nearest transcript, turned into the nearest Gaussian's value: the
        # reference implementation's per-pixel max, offered for comparison.
        if not counts.any():
            return np.zeros(counts.shape, np.float32)
        dist = ndimage.distance_transform_edt(counts == 0)
        out = np.exp(-(dist**2) / (2.0 * sigma**2)).astype(np.float32)
        out[dist > len(kernel) // 2] = 0
        return out
    out = _sum(counts, kernel)
    if scale != 1.0:
        out /= np.float32(scale)
    return np.minimum(out, 1.0, out=out)


def _auto_scale(total, q: float = AUTO_SCALE_PERCENTILE) -> float:
    """Whole-image percentile of the unclipped sum over pixels that have any transcript nearby."""
    h, w = total.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / 4_000_000))))
    sample = total[::step, ::step]
    return _auto_scale_of_samples(np.asarray(sample.compute() if isinstance(sample, da.Array) else sample))


def _auto_scale_of_samples(sample: np.ndarray, q: float = AUTO_SCALE_PERCENTILE) -> float:
    """Return the auto scale from the unclipped sum sampled every ``step`` px of the whole image (any order)."""
    sample = np.asarray(sample).ravel()
    sample = sample[sample > 1e-3]
    return max(float(np.percentile(sample, q)), 1.0) if sample.size else 1.0


def auto_scale(
    x: np.ndarray, y: np.ndarray, shape: tuple[int, int], *, sigma: float, chunks: int | None = None
) -> float:
    """Return the divisor that ``scale="auto"`` uses for these transcripts (whole-image percentile of the sum)."""
    return _auto_scale(rna_location_map_array(x, y, shape, sigma=sigma, chunks=chunks, _unclipped=True))


def kernel_radius(sigma: float) -> int:
    """Pixels within which a transcript adds to the map (the Gaussian is cut at 4 sigma)."""
    return len(gaussian_kernel(sigma)) // 2


def rna_map_window(
    x: np.ndarray,
    y: np.ndarray,
    window,
    *,
    sigma: float,
    mode: str = "sum",
    scale: float = 1.0,
    unclipped: bool = False,
) -> np.ndarray:
    """Return the RNA location map on ``window`` exactly as the whole image's map has it there.

    ``x``, ``y`` are transcript pixel coordinates in the whole image's frame; they must include every
    transcript within :func:`kernel_radius` of the window (others are ignored). The map is built on the
    window padded by that radius, so molecules just outside still add to it, then cropped.
    """
    kernel = gaussian_kernel(sigma)
    r = len(kernel) // 2
    h, w = window.y1 - window.y0 + 2 * r, window.x1 - window.x0 + 2 * r
    rows = np.floor(np.asarray(y, dtype=np.float64)).astype(np.int64) - (window.y0 - r)
    cols = np.floor(np.asarray(x, dtype=np.float64)).astype(np.int64) - (window.x0 - r)
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    counts = _count_image(rows[keep], cols[keep], (h, w))
    out = _sum(counts, kernel) if unclipped else _filter(counts, kernel, mode, sigma, scale=float(scale))
    return out[r : h - r, r : w - r]


def check_rna_map_args(*, sigma: Any, mode: Any, scale: Any, chunks: Any) -> None:
    """Validate the RNA-map arguments, each with a message naming it."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.integer | np.floating):
        raise TypeError(f"`sigma` must be a number of pixels, got {sigma!r}.")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"`sigma` must be a positive finite number of pixels, got {sigma!r}.")
    if mode not in ("sum", "max"):
        raise ValueError(f"`mode` must be 'sum' (Eq. 5) or 'max' (the reference code's), got {mode!r}.")
    if isinstance(scale, str):
        if scale != "auto":
            raise ValueError(f"`scale` must be a positive number or 'auto', got {scale!r}.")
    elif isinstance(scale, bool) or not isinstance(scale, int | float | np.integer | np.floating):
        raise TypeError(f"`scale` must be a positive number or 'auto', got {scale!r}.")
    elif not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"`scale` must be a positive finite number (the divisor of the sum) or 'auto', got {scale!r}.")
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int | np.integer) or chunks < 1):
        raise ValueError(f"`chunks` must be a positive integer (chunk side in pixels) or None, got {chunks!r}.")


def rna_location_map_array(
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int],
    *,
    sigma: float = 7.0,
    mode: Literal["sum", "max"] = "sum",
    scale: float | Literal["auto"] = 1.0,
    chunks: int | None = None,
    _unclipped: bool = False,
) -> np.ndarray | da.Array:
    """Build the RNA location map from transcript pixel coordinates.

    Parameters
    ----------
    x, y
        Transcript coordinates in pixels (column, row); those outside ``shape`` are ignored.
    shape
        ``(height, width)`` of the map.
    sigma
        Gaussian width in pixels (the paper uses 7 or 9).
    mode
        ``"sum"``: Eq. 5, ``min(sum of Gaussians, 1)``. ``"max"``: the value of the nearest
        transcript's Gaussian (what the authors' code computed).
    scale
        ``"sum"`` mode only: divide the sum by this before clipping at 1. ``1`` is Eq. 5 exactly.
        Dense data (Xenium, CosMx: a few hundred Gaussians overlap at sigma = 7 px) saturate Eq. 5
        to 1 almost everywhere; ``"auto"`` uses the whole image's 99th percentile of the sum (over
        pixels near any transcript), which keeps the contrast between dense cells and sparse
        background, as the image's own percentile normalisation does.
    chunks
        If given, return a lazy dask array built chunk by chunk (chunk side in pixels) with a halo
        of the kernel radius, so memory is bounded by the chunk, not the image.

    Returns
    -------
    float32 array of ``shape`` with values in [0, 1].
    """
    check_rna_map_args(sigma=sigma, mode=mode, scale=scale, chunks=chunks)
    h, w = int(shape[0]), int(shape[1])
    rows = np.floor(np.asarray(y, dtype=np.float64)).astype(np.int64)
    cols = np.floor(np.asarray(x, dtype=np.float64)).astype(np.int64)
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols = rows[keep], cols[keep]
    kernel = gaussian_kernel(sigma)
    if chunks is None:
        counts = _count_image(rows, cols, (h, w))
        if _unclipped:
            return _sum(counts, kernel)
        if mode == "sum" and scale == "auto":
            scale = _auto_scale(_sum(counts, kernel))
        return _filter(counts, kernel, mode, sigma, scale=float(scale))

    # Bucket transcripts by chunk once (counting sort), so each chunk bins only its own points.
    n_by, n_bx = -(-h // chunks), -(-w // chunks)
    block = (rows // chunks) * n_bx + cols // chunks
    order = np.argsort(block, kind="stable")
    starts = np.searchsorted(block[order], np.arange(n_by * n_bx + 1))
    rows, cols = rows[order], cols[order]

    def counts_block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        by, bx = block_info[None]["chunk-location"]
        sl = slice(starts[by * n_bx + bx], starts[by * n_bx + bx + 1])
        return _count_image(rows[sl] - r0, cols[sl] - c0, (r1 - r0, c1 - c0))

    radius = len(kernel) // 2
    row_chunks = tuple(min(chunks, h - i * chunks) for i in range(n_by))
    col_chunks = tuple(min(chunks, w - j * chunks) for j in range(n_bx))
    counts = da.map_blocks(counts_block, chunks=(row_chunks, col_chunks), dtype=np.float32)
    # map_overlap needs every chunk at least as wide as the halo; fold a thin last chunk into its neighbour.
    fix = [c if len(c) == 1 or c[-1] >= radius else c[:-2] + (c[-2] + c[-1],) for c in counts.chunks]
    counts = counts.rechunk(tuple(fix))
    if _unclipped:
        return counts.map_overlap(_sum, depth=radius, boundary=0, kernel=kernel, dtype=np.float32)
    if mode == "sum" and scale == "auto":
        scale = _auto_scale(counts.map_overlap(_sum, depth=radius, boundary=0, kernel=kernel, dtype=np.float32))
    return counts.map_overlap(
        _filter, depth=radius, boundary=0, kernel=kernel, mode=mode, sigma=sigma, scale=float(scale), dtype=np.float32
    )


def rna_location_map(
    sdata: sd.SpatialData,
    points_key: str | None = None,
    image_key: str | None = None,
    *,
    sigma: float = 7.0,
    genes: list[str] | None = None,
    mode: Literal["sum", "max"] = "sum",
    scale: float | Literal["auto"] = 1.0,
    chunks: int | None = None,
    key_added: str = RNA_MAP_KEY,
    overwrite: bool = False,
    inplace: bool = True,
):
    """Compute the RNA location map ``G`` (Eq. 5) on the pixel grid of an image.

    ``G(p) = min(sum_l exp(-|p - g_l|^2 / (2 sigma^2)), 1)`` for transcripts ``g_l`` mapped to the
    image's pixels through spatialdata's transformations.

    Parameters
    ----------
    sdata
        SpatialData object with transcripts and an image.
    points_key, image_key
        Elements to use; may be omitted when there is exactly one of each.
    sigma
        Gaussian width in image pixels.
    genes
        Use only these genes (all by default). Unknown genes raise an error.
    mode
        ``"sum"`` (the paper) or ``"max"`` (the authors' code); see :func:`rna_location_map_array`.
    scale
        Divide the sum by this before clipping (``1``: Eq. 5; ``"auto"``: whole-image 99th
        percentile, for dense data); see :func:`rna_location_map_array`.
    chunks
        Chunk side for lazy, bounded-memory computation; by default images above 64 Mpx are built
        lazily in 4096 px chunks and smaller ones at once.
    key_added
        Name of the image element written.
    overwrite
        Replace an existing element of that name.
    inplace
        Add the map to ``sdata`` as a single-channel image element; otherwise return it.

    Returns
    -------
    The map as an image element (``(c, y, x)`` DataArray, channel ``"rna"``) when ``inplace=False``.
    """
    check_rna_map_args(sigma=sigma, mode=mode, scale=scale, chunks=chunks)
    if genes is not None:
        if isinstance(genes, str) or not all(isinstance(g, str) for g in genes):
            raise TypeError(f"`genes` must be a list of gene names, got {genes!r}; for one gene pass [{genes!r}].")
        genes = list(genes)
        if not genes:
            raise ValueError("`genes` is empty; pass None to use all genes.")
    image_key, image = get_image(sdata, image_key)
    shape = (image.sizes["y"], image.sizes["x"])
    if inplace:
        points_key = get_points(sdata, points_key)[0]
        check_free(sdata, [key_added], overwrite=overwrite, inputs=(points_key, image_key))
    tx = transcripts_to_pixels(sdata, points_key, image_key, genes=genes)
    if chunks is None and shape[0] * shape[1] > _LAZY_PIXELS:
        chunks = 4096
    logger.info("RNA location map: %d transcripts, sigma=%g px, image %d x %d", len(tx), sigma, *shape)
    data = rna_location_map_array(
        tx["x"].to_numpy(), tx["y"].to_numpy(), shape, sigma=sigma, mode=mode, scale=scale, chunks=chunks
    )
    element = Image2DModel.parse(
        data[None],
        dims=("c", "y", "x"),
        c_coords=[RNA_CHANNEL],
        transformations=get_transformation(image, get_all=True),
    )
    if not inplace:
        return element
    from ..io._write import add_elements

    add_elements(sdata, {key_added: element}, overwrite=overwrite)
    return None
