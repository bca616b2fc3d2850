"""Tiled inference engine ("Network Inference"): any image size, predictions averaged per pixel.

Nothing here knows about SpatialData; :func:`gsn.tl.segment` prepares the inputs and writes results.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch

from .._logging import logger
from ..blockwise import Window
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


def _check_options(tile: int, overlap: float, batch_size: int, blending: str) -> None:
    if tile < 16:
        raise ValueError(f"`tile` must be at least 16 px, got {tile}.")
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if blending not in ("mean", "gaussian"):
        raise ValueError(f"`blending` must be 'mean' or 'gaussian', got {blending!r}.")


def tiles_for(core: Window, shape: tuple[int, int], tile: int, overlap: float) -> tuple[list[int], list[int]]:
    """Return the starts (rows, columns) of the whole image's tiles that cover some pixel of ``core``."""
    ys = [s for s in tile_starts(shape[0], tile, overlap) if s < core.y1 and s + tile > core.y0]
    xs = [s for s in tile_starts(shape[1], tile, overlap) if s < core.x1 and s + tile > core.x0]
    return ys, xs


def input_window(core: Window, shape: tuple[int, int], tile: int, overlap: float) -> Window:
    """Return the input pixels that the tiles covering ``core`` read (clipped to the image)."""
    ys, xs = tiles_for(core, shape, tile, overlap)
    return Window(ys[0], min(ys[-1] + tile, shape[0]), xs[0], min(xs[-1] + tile, shape[1]))


def predict_window(
    runner: TileRunner,
    inputs: np.ndarray,
    window: Window,
    core: Window,
    shape: tuple[int, int],
    *,
    tile: int = 256,
    overlap: float = 0.5,
    batch_size: int = 8,
    blending: Literal["mean", "gaussian"] = "mean",
    progress: bool = False,
) -> np.ndarray:
    """Averaged network maps on ``core``, exactly as a whole-image run gives them there.

    The tiles are those of the whole image (:func:`tile_starts` on ``shape``) that cover ``core``, cut
    from ``inputs``, which holds the image window ``window`` (at least :func:`input_window` of
    ``core``). Each pixel of ``core`` sums the same tiles, in the same order, as in the whole image,
    so block-wise inference reproduces whole-image inference.

    Returns
    -------
    ``(4, h, w)`` float32 on ``core``: ``M``, ``C`` (probabilities), ``dy``, ``dx`` (pixels).
    """
    from tqdm.auto import tqdm

    dev = runner.device
    c = inputs.shape[0]
    ys, xs = tiles_for(core, shape, tile, overlap)
    h, w = core.shape
    # On a GPU the sums stay on the device: one copy back at the end instead of one per batch.
    on_device = dev.type == "cuda"
    acc = torch.zeros((4, h, w), device=dev) if on_device else np.zeros((4, h, w), dtype=np.float32)
    weight = torch.zeros((h, w), device=dev) if on_device else np.zeros((h, w), dtype=np.float32)
    tile_weight = _blend_weights(tile, blending)
    tile_weight_t = torch.from_numpy(tile_weight).to(dev)
    tile_weight_acc = tile_weight_t if on_device else tile_weight

    def cut(ty: int, tx: int) -> np.ndarray:
        y1, x1 = min(ty + tile, shape[0]), min(tx + tile, shape[1])
        block = inputs[:, ty - window.y0 : y1 - window.y0, tx - window.x0 : x1 - window.x0]
        if block.shape[1:] != (tile, tile):  # only an image smaller than a tile
            padded = np.zeros((c, tile, tile), dtype=np.float32)
            padded[:, : block.shape[1], : block.shape[2]] = block
            block = padded
        return np.asarray(block, dtype=np.float32)

    def flush(batch: list[tuple[int, int]]) -> None:
        maps = runner(np.stack([cut(ty, tx) for ty, tx in batch])) * tile_weight_t
        if not on_device:
            maps = maps.cpu().numpy()
        for (ty, tx), m in zip(batch, maps, strict=True):
            # the part of the tile inside the core, in tile and in core coordinates
            oy0, oy1 = max(ty, core.y0), min(ty + tile, core.y1)
            ox0, ox1 = max(tx, core.x0), min(tx + tile, core.x1)
            src = (slice(oy0 - ty, oy1 - ty), slice(ox0 - tx, ox1 - tx))
            dst = (slice(oy0 - core.y0, oy1 - core.y0), slice(ox0 - core.x0, ox1 - core.x0))
            acc[(slice(None), *dst)] += m[(slice(None), *src)]
            weight[dst] += tile_weight_acc[src]

    positions = [(ty, tx) for ty in ys for tx in xs]
    with torch.inference_mode(), tqdm(total=len(positions), desc="inference", unit="tile", disable=not progress) as bar:
        for i in range(0, len(positions), batch_size):
            batch = positions[i : i + batch_size]
            flush(batch)
            bar.update(len(batch))
    acc /= weight  # every pixel is covered by at least one tile
    return acc.cpu().numpy() if on_device else acc


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
    points at the same whole-image centre from every tile). Memory is the inputs plus five float32
    accumulator planes (about 20 bytes per pixel); :func:`gsn.tl.segment` runs the same code block
    by block (:func:`predict_window`) for bounded memory.

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
    from .._settings import settings

    if inputs.ndim != 3:
        raise ValueError(f"inputs must be (C, H, W), got shape {tuple(inputs.shape)}.")
    c, h, w = inputs.shape
    if c != net.in_channels:
        raise ValueError(f"The network expects {net.in_channels} input channels, got {c}.")
    _check_options(tile, overlap, batch_size, blending)
    progress = settings.progress if progress is None else progress
    own_runner = runner is None
    if own_runner:
        runner = TileRunner(net, device, precision=precision, threads=threads, compile=compile)
    logger.info("Inference on %d x %d px: tiles of %d px, overlap %.0f%%, device %s",
                h, w, tile, 100 * overlap, runner.device)  # fmt: skip
    logger.debug("Tile runner: %s", runner.describe())
    whole = Window(0, h, 0, w)
    try:
        maps = predict_window(
            runner, np.asarray(inputs, dtype=np.float32), whole, whole, (h, w), tile=tile, overlap=overlap,
            batch_size=batch_size, blending=blending, progress=progress,
        )  # fmt: skip
    finally:
        if own_runner:
            runner.close()
    return PredictedMaps(maps[0], maps[1], maps[2:])
