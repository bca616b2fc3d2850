"""Tiled inference engine ("Network Inference"): any image size, predictions averaged per pixel.

Nothing here knows about SpatialData; :func:`gsn.tl.segment` prepares the inputs and writes results.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np
import torch

from .._logging import logger
from ._model import resolve_device
from ._runner import TileRunner
from ._unet import GeneSegUNet


class PredictedMaps(NamedTuple):
    """Whole-image network outputs after tile averaging.

    Attributes
    ----------
    mask
        Confidence ``M`` ``(H, W)``, probabilities.
    center
        Centre map ``C`` ``(H, W)``, probabilities.
    offsets
        Offsets ``V`` ``(2, H, W)`` in pixels, order ``(dy, dx)``.
    """

    mask: np.ndarray
    center: np.ndarray
    offsets: np.ndarray


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start positions of tiles of side ``tile`` covering ``[0, length)`` with the given overlap.

    The stride is ``round(tile * (1 - overlap))``; the last tile is shifted back to end at the
    border, so every tile lies inside the image when ``length >= tile`` (a shorter axis has the
    single start 0, and the tile is zero-padded).
    """
    if length <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _blend_weights(tile: int, blending: str) -> np.ndarray:
    if blending == "mean":
        return np.ones((tile, tile), dtype=np.float32)
    # Gaussian taper (as Cellpose / nnU-Net): tile centres count most, edges, where the network sees
    # least context, least; a floor keeps image-border pixels (covered by one tile) defined.
    d = np.arange(tile, dtype=np.float32) - (tile - 1) / 2
    g = np.exp(-(d**2) / (2 * (tile / 4) ** 2))
    return np.maximum(np.outer(g, g), 1e-3).astype(np.float32)


def _tiles(inputs, tile: int, starts_y: list[int], starts_x: list[int]) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(y0, x0, tile)`` with zero padding where a tile extends beyond the image."""
    c, h, w = inputs.shape
    for y0 in starts_y:
        for x0 in starts_x:
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            block = np.asarray(inputs[:, y0:y1, x0:x1], dtype=np.float32)  # numpy, dask or zarr
            if block.shape[1:] != (tile, tile):
                padded = np.zeros((c, tile, tile), dtype=np.float32)
                padded[:, : y1 - y0, : x1 - x0] = block
                block = padded
            yield y0, x0, block


def predict_maps(
    net: GeneSegUNet,
    inputs,
    *,
    tile: int = 256,
    overlap: float = 0.5,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    blending: Literal["mean", "gaussian"] = "mean",
    progress: bool | None = None,
    precision: str | None = None,
    threads: int | None = None,
    compile: bool | None = None,
    runner: TileRunner | None = None,
) -> PredictedMaps:
    """Run the network over an image in overlapping tiles and average the predictions per pixel.

    Following the paper, tiles of ``tile`` px overlap by ``overlap`` in x and y (256 px and 50 %:
    every interior pixel is predicted four times) and the per-tile probabilities ``M``, ``C`` and
    offsets ``V`` are averaged in the whole image's frame (offsets can be averaged because ``V(p)``
    points at the same whole-image centre from every tile). Tiles are cut from ``inputs`` one batch
    at a time and never held together; memory is the inputs plus five float32 accumulator planes
    (about 20 bytes per pixel).

    Parameters
    ----------
    net
        The network.
    inputs
        ``(C, H, W)`` array (numpy, or anything sliceable such as dask or zarr), float in [0, 1].
    tile
        Tile side in pixels. Images smaller than a tile are zero-padded.
    overlap
        Fraction of a tile shared with its neighbour along each axis, in [0, 1).
    batch_size
        Tiles cut, predicted and accumulated at a time; the runner splits them into forward passes of
        ``gsn.settings.max_batch`` tiles (by default two 256 px tiles on a CPU, all on a GPU).
    device
        Torch device; ``"auto"`` picks CUDA, then MPS, then CPU.
    blending
        ``"mean"``: the paper's uniform average. ``"gaussian"``: weight each tile's pixels by a
        Gaussian centred on the tile (sigma = tile / 4), which down-weights tile edges.
    progress
        Show a progress bar; defaults to ``gsn.settings.progress``.
    precision, threads, compile
        Passed to :class:`gsn.models.TileRunner` (``None``: from ``gsn.settings``): ``"auto"`` runs
        bf16 on CPUs with native bf16 and fp16 on CUDA.
    runner
        A :class:`gsn.models.TileRunner` of ``net`` to reuse across calls (its device and options
        win over ``device``, ``precision``, ``threads`` and ``compile``); by default one is made for
        this call and closed after it.

    Returns
    -------
    :class:`PredictedMaps` of float32 arrays.
    """
    from tqdm.auto import tqdm

    from .._settings import settings

    if inputs.ndim != 3:
        raise ValueError(f"inputs must be (C, H, W), got shape {tuple(inputs.shape)}.")
    c, h, w = inputs.shape
    if c != net.in_channels:
        raise ValueError(f"The network expects {net.in_channels} input channels, got {c}.")
    if tile < 16:
        raise ValueError(f"`tile` must be at least 16 px, got {tile}.")
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if blending not in ("mean", "gaussian"):
        raise ValueError(f"`blending` must be 'mean' or 'gaussian', got {blending!r}.")
    progress = settings.progress if progress is None else progress

    dev = resolve_device(device) if runner is None else runner.device
    starts_y, starts_x = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    n_tiles = len(starts_y) * len(starts_x)
    logger.info("Inference on %d x %d px: %d tiles of %d px, overlap %.0f%%, device %s",
                h, w, n_tiles, tile, 100 * overlap, dev)  # fmt: skip

    # On a GPU the sums stay on the device: one copy back at the end instead of one per batch.
    xp = torch if dev.type == "cuda" else np
    acc = torch.zeros((4, h, w), device=dev) if xp is torch else np.zeros((4, h, w), dtype=np.float32)
    weight = torch.zeros((h, w), device=dev) if xp is torch else np.zeros((h, w), dtype=np.float32)
    tile_weight = _blend_weights(tile, blending)
    tile_weight_t = torch.from_numpy(tile_weight).to(dev)
    tile_weight_acc = tile_weight_t if xp is torch else tile_weight

    def flush(batch: list[tuple[int, int, np.ndarray]]) -> None:
        maps = runner(np.stack([b[2] for b in batch])) * tile_weight_t
        if xp is np:
            maps = maps.cpu().numpy()
        for (y0, x0, _), m in zip(batch, maps, strict=True):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            acc[:, y0:y1, x0:x1] += m[:, : y1 - y0, : x1 - x0]
            weight[y0:y1, x0:x1] += tile_weight_acc[: y1 - y0, : x1 - x0]

    own_runner = runner is None
    if own_runner:
        runner = TileRunner(net, dev, precision=precision, threads=threads, compile=compile)
    logger.debug("Tile runner: %s", runner.describe())
    try:
        with torch.inference_mode(), tqdm(total=n_tiles, desc="inference", unit="tile", disable=not progress) as bar:
            batch: list[tuple[int, int, np.ndarray]] = []
            for item in _tiles(inputs, tile, starts_y, starts_x):
                batch.append(item)
                if len(batch) == batch_size:
                    flush(batch)
                    bar.update(len(batch))
                    batch = []
            if batch:
                flush(batch)
                bar.update(len(batch))
    finally:
        if own_runner:
            runner.close()

    acc /= weight  # every pixel is covered by at least one tile
    if xp is torch:
        acc = acc.cpu().numpy()
    return PredictedMaps(acc[0], acc[1], acc[2:])
