"""Block-wise segmentation of large images: one pure per-block function and one generic driver.

A large image is cut into square *core* blocks. Each block is segmented on its core plus a *halo*
(wider than the largest cell), and keeps only the cells whose centroid falls in its core, so every
cell is decoded whole by exactly one block. Cells are then pasted into the whole-image label array:
first each cell's pixels inside its own block's core, then, into pixels still empty, its pixels in
the neighbours' cores; so the result does not depend on the order in which blocks finish. Memory per
block is bounded by the block, not the image; blocks run in this process or as tasks on a
``dask.distributed`` cluster, with identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Block:
    """One block: its core ``[y0, y1) x [x0, x1)`` and the window with halo that is segmented."""

    index: int
    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int

    @property
    def window(self) -> tuple[slice, slice]:
        """Slices of the window in the image."""
        return slice(self.wy0, self.wy1), slice(self.wx0, self.wx1)


def make_blocks(shape: tuple[int, int], block: int, halo: int) -> list[Block]:
    """Cover an image of ``shape`` with cores of side ``block`` and windows extended by ``halo``."""
    h, w = shape
    if block < 1 or halo < 0:
        raise ValueError(f"`block` must be >= 1 and `halo` >= 0, got {block} and {halo}.")
    out = []
    for y0 in range(0, h, block):
        for x0 in range(0, w, block):
            y1, x1 = min(y0 + block, h), min(x0 + block, w)
            out.append(Block(len(out), y0, y1, x0, x1, max(y0 - halo, 0), min(y1 + halo, h),
                             max(x0 - halo, 0), min(x1 + halo, w)))  # fmt: skip
    return out


@dataclass
class BlockCells:
    """Cells owned by one block, in window coordinates: a local label image and the kept ids."""

    block: Block
    labels: np.ndarray  # int32 window labels, only owned cells, ids 1..n
    n: int


def keep_owned(block: Block, labels: np.ndarray) -> BlockCells:
    """Keep the cells of a window's label image whose centroid lies in the block's core; renumber 1..n."""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return BlockCells(block, np.zeros(labels.shape, np.int32), 0)
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(labels, dtype=np.float64), labels, index)
    present = area > 0
    cy, cx = np.zeros(n), np.zeros(n)
    if present.any():
        centres = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, index[present]))
        cy[present], cx[present] = centres[:, 0] + block.wy0, centres[:, 1] + block.wx0
    owned = present & (cy >= block.y0) & (cy < block.y1) & (cx >= block.x0) & (cx < block.x1)
    lut = np.zeros(n + 1, np.int32)
    lut[1:][owned] = np.arange(1, int(owned.sum()) + 1, dtype=np.int32)
    return BlockCells(block, lut[labels], int(owned.sum()))


def assemble(shape: tuple[int, int], results: Iterable[BlockCells]) -> np.ndarray:
    """Paste every block's owned cells into one label image with globally unique ids 1..n.

    Ids follow the block order (then each block's local order), so the output is the same whatever
    the order in which ``results`` arrive.
    """
    results = sorted(results, key=lambda r: r.block.index)
    out = np.zeros(shape, np.int32)
    offsets = np.cumsum([0] + [r.n for r in results])
    # Pass 1: each cell inside its own core; pass 2: the rest of it, where nobody else is.
    for r, offset in zip(results, offsets, strict=False):
        if r.n == 0:
            continue
        b = r.block
        core = (slice(b.y0 - b.wy0, b.y1 - b.wy0), slice(b.x0 - b.wx0, b.x1 - b.wx0))
        local = r.labels[core]
        target = out[b.y0 : b.y1, b.x0 : b.x1]
        target[local > 0] = local[local > 0] + offset
    for r, offset in zip(results, offsets, strict=False):
        if r.n == 0:
            continue
        target = out[r.block.window]
        free = (r.labels > 0) & (target == 0)
        target[free] = r.labels[free] + offset
    return out


def run_blocks(
    blocks: list[Block],
    segment_block: Callable[[Block], BlockCells],
    *,
    client: Any | None = None,
    progress: bool = True,
) -> list[BlockCells]:
    """Run ``segment_block`` on every block, here or as ``dask.distributed`` tasks on ``client``.

    ``segment_block`` must be picklable for a cluster (a module-level function or a
    :func:`functools.partial` of one). Results come back in block order.
    """
    from tqdm.auto import tqdm

    if client is None:
        return [segment_block(b) for b in tqdm(blocks, desc="blocks", unit="block", disable=not progress)]
    from distributed import as_completed

    futures = client.map(segment_block, blocks, pure=False)
    done = {}
    with tqdm(total=len(blocks), desc="blocks (dask)", unit="block", disable=not progress) as bar:
        for future in as_completed(futures):
            result = future.result()
            done[result.block.index] = result
            bar.update(1)
    return [done[b.index] for b in blocks]
