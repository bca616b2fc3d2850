"""Block-wise GeneSegNet segmentation: bounded memory for whole slides, and tasks for a dask cluster.

:class:`BlockSegmenter` is the pure per-block function (window of the image and the transcripts in,
owned cells out); :func:`gsn.models._blocks.run_blocks` is the generic driver that runs it here or
on a ``dask.distributed`` cluster, and :func:`gsn.models._blocks.assemble` pastes the cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..models._blocks import Block, BlockCells, assemble, keep_owned, make_blocks, run_blocks


@dataclass
class BlockSegmenter:
    """Everything one block needs, picklable so blocks can run on dask workers.

    The image stays lazy (dask, read per window); normalisation levels and the RNA map's scale are
    whole-image values computed once, so blocks agree with each other and with a whole-image run.
    """

    model: Any  # GeneSegNetModel
    image: Any  # (C, H, W) dask or numpy, raw intensities
    levels: list[tuple[float, float]]
    x: np.ndarray  # transcripts in image pixels, sorted by y
    y: np.ndarray
    factor: float  # model pixels per image pixel
    rna_scale: float
    predict: dict = field(default_factory=dict)  # predict_maps options
    decode: dict = field(default_factory=dict)  # decode_instances options

    def _rna(self, block: Block, shape: tuple[int, int]) -> np.ndarray:
        from ..pp import rna_location_map_array
        from ..pp._rna_map import gaussian_kernel

        cfg = self.model.config
        # Transcripts just outside the window still add to its map: take them in within the kernel's reach.
        reach = (len(gaussian_kernel(cfg.sigma)) // 2 + 1) / self.factor
        lo, hi = np.searchsorted(self.y, [block.wy0 - reach, block.wy1 + reach])
        x, y = self.x[lo:hi], self.y[lo:hi]
        keep = (x >= block.wx0 - reach) & (x < block.wx1 + reach)
        fy, fx = shape[0] / (block.wy1 - block.wy0), shape[1] / (block.wx1 - block.wx0)
        margin = int(np.ceil(reach * max(fy, fx)))
        xs = (x[keep] - block.wx0) * fx + margin
        ys = (y[keep] - block.wy0) * fy + margin
        padded = (shape[0] + 2 * margin, shape[1] + 2 * margin)
        rna = rna_location_map_array(xs, ys, padded, sigma=cfg.sigma, mode=cfg.rna_mode, scale=self.rna_scale)
        return rna[margin : margin + shape[0], margin : margin + shape[1]]

    def __call__(self, block: Block) -> BlockCells:
        from ..models import decode_instances, predict_maps
        from ..pp import normalize_array
        from ._segment import _resize

        window = np.asarray(self.image[:, block.wy0 : block.wy1, block.wx0 : block.wx1], dtype=np.float32)
        chans = [normalize_array(ch, levels=lv) for ch, lv in zip(window, self.levels, strict=True)]
        h, w = window.shape[1:]
        shape = (h, w)
        if self.factor != 1.0:
            shape = (max(1, int(round(h * self.factor))), max(1, int(round(w * self.factor))))
            chans = [_resize(ch, shape, order=1) for ch in chans]
        inputs = np.stack([*chans, self._rna(block, shape)]).astype(np.float32, copy=False)
        maps = predict_maps(self.model.net, inputs, progress=False, **self.predict)
        labels = decode_instances(maps.mask, maps.center, maps.offsets, **self.decode)
        if self.factor != 1.0:
            labels = _resize(labels, (h, w), order=0)
        return keep_owned(block, labels)


def segment_blockwise(
    segmenter: BlockSegmenter,
    shape: tuple[int, int],
    *,
    block_size: int,
    halo: int,
    client: Any | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Segment an image of ``shape`` block by block and assemble one label image (ids 1..n)."""
    from skimage.segmentation import relabel_sequential

    blocks = make_blocks(shape, block_size, halo)
    results = run_blocks(blocks, segmenter, client=client, progress=progress)
    labels = assemble(shape, results)
    # Pasting can leave a cell without pixels (all claimed in pass 1 by a neighbour): keep ids 1..n.
    return relabel_sequential(labels)[0].astype(np.int32)
