"""Per-block kernels of GeneSegNet segmentation: pure functions of one block's arrays.

:func:`gsn.tl.segment` runs them over a block grid with :func:`gsn.blockwise.map_blocks`; each reads
the window of its block (core plus a halo) and returns results for the core only, equal to what a
whole-image run gives there:

- :func:`rna_sample_kernel`: samples of the unclipped RNA map on a whole-image grid (``rna_scale="auto"``);
- :func:`maps_kernel`: normalised, resampled inputs and the network's averaged maps on the core;
- :func:`centers_kernel`: the cell centres (peaks of the centre map) that lie in the core;
- :func:`decode_kernel`: cells decoded on the window from the maps and *all* centres, kept on the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..blockwise import Window
from ._frames import Frames, resample_window

# Extra context (model pixels) beyond the NMS window when finding centres, so that a flat peak cut by
# a block border is still seen whole by the block that keeps it.
CENTER_MARGIN = 8


@dataclass(frozen=True)
class InputSpec:
    """How the network's inputs are made from the raw image and the transcripts (whole-image constants)."""

    frames: Frames
    levels: tuple[tuple[float, float], ...]
    sigma: float
    rna_mode: str
    rna_scale: float
    tile: int
    overlap: float
    batch_size: int
    blending: str
    decode: dict = field(default_factory=dict)


def rna_sample_kernel(x: np.ndarray, y: np.ndarray, core: Window, sigma: float, step: int) -> np.ndarray:
    """Unclipped RNA-map values at the whole-image sample grid (every ``step`` px) inside ``core``."""
    from ..pp._rna_map import rna_map_window

    total = rna_map_window(x, y, core, sigma=sigma, unclipped=True)
    r0, c0 = -(-core.y0 // step) * step, -(-core.x0 // step) * step
    return total[r0 - core.y0 :: step, c0 - core.x0 :: step].ravel()


def maps_kernel(
    runner, spec: InputSpec, image: np.ndarray, source: Window, x: np.ndarray, y: np.ndarray, window: Window,
    core: Window,
) -> np.ndarray:  # fmt: skip
    """Network maps ``(4, h, w)`` on the model-frame ``core``.

    ``image`` holds the raw channels of the image window ``source``; ``x``, ``y`` the transcripts (model
    pixels) near ``window``, the model-frame input window of the tiles covering ``core``.
    """
    from ..pp import normalize_array
    from ..pp._rna_map import rna_map_window
    from ._inference import predict_window

    chans = np.stack([normalize_array(ch, levels=lv) for ch, lv in zip(image, spec.levels, strict=True)])
    chans = resample_window(chans, source, window, spec.frames)
    rna = rna_map_window(x, y, window, sigma=spec.sigma, mode=spec.rna_mode, scale=spec.rna_scale)
    inputs = np.concatenate([chans, rna[None].astype(np.float32)]).astype(np.float32, copy=False)
    return predict_window(
        runner, inputs, window, core, spec.frames.model_shape, tile=spec.tile, overlap=spec.overlap,
        batch_size=spec.batch_size, blending=spec.blending,
    )  # fmt: skip


def centers_kernel(center: np.ndarray, window: Window, core: Window, threshold: float, nms_size: int) -> np.ndarray:
    """Centres ``(K, 2)`` (rows, columns, whole-image model pixels) whose peak group starts in ``core``.

    Peaks as :func:`gsn.models.find_centers`: local maxima at or above ``threshold``, each 8-connected
    group of equal maxima one centre at its mean position. A group belongs to the block holding its
    first pixel in raster order, so every centre is found by exactly one block.
    """
    center = np.asarray(center, dtype=np.float32)
    peaks = (center >= threshold) & (center == ndimage.maximum_filter(center, size=nms_size, mode="constant"))
    groups, n = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 2))
    rows, cols = np.nonzero(groups)
    g = groups[rows, cols] - 1
    counts = np.bincount(g, minlength=n)
    cy = np.bincount(g, rows, n) / counts + window.y0
    cx = np.bincount(g, cols, n) / counts + window.x0
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, g, rows.astype(np.int64) * center.shape[1] + cols)
    fy, fx = np.divmod(first, center.shape[1])
    keep = core.contains(fy + window.y0, fx + window.x0)
    return np.stack([cy[keep], cx[keep]], axis=1)


def decode_kernel(
    mask: np.ndarray, offsets: np.ndarray, window: Window, core: Window, shape: tuple[int, int],
    centers: np.ndarray, ids: np.ndarray, decode: dict,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """Return the decoded cells on ``core`` (int32, the centres' global ids) and how many the window cut.

    Every foreground pixel of the window goes to the centre (of ``centers``: all centres near the window,
    with their global ``ids``) nearest to ``p + V(p)`` (Eq. 4), then :func:`gsn.models.clean_labels`
    keeps one piece per cell, fills holes and drops small cells. A cell on the core is decoded as in the
    whole image when the window holds all of it; the second value counts the core's cells that touch
    an inner border of the window (the halo was too narrow for them).
    """
    from scipy.spatial import cKDTree

    from ._decode import clean_labels

    h, w = mask.shape
    local = np.zeros((h, w), dtype=np.int32)
    rows, cols = np.nonzero(mask >= decode["mask_threshold"])
    if len(centers) and len(rows):
        target = np.stack([rows + window.y0 + offsets[0, rows, cols], cols + window.x0 + offsets[1, rows, cols]], 1)
        _, k = cKDTree(centers).query(target, k=1)
        local[rows, cols] = k + 1
    cleaned = clean_labels(local, min_area=decode["min_area"], fill_holes=True)
    # clean_labels numbers cells 1..n in raster order; take each back to its centre's global id.
    lut = np.zeros(int(cleaned.max()) + 1, dtype=np.int32)
    fg = (cleaned > 0) & (local > 0)  # filled holes have no centre of their own
    lut[cleaned[fg]] = ids[local[fg] - 1]
    labels = lut[cleaned]
    on_core = labels[core.within(window)]
    return on_core, len(window.reaching_border(labels, shape, on_core))
