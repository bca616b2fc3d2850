"""The anchors that growth starts from: the network's decoded cells, plus the stain's nuclei it missed.

The default network finds fewer cells than the nuclear stain shows (Xenium crop: 773 decoded cells,
1,081 watershed nuclei, about 1,100 cells by the instrument). A watershed nucleus that no decoded cell
comes within :data:`GAP` pixels of is a cell the network missed; it joins the anchors with its own id
and is grown with the transcripts like the others. Nuclei next to a decoded cell are left out, so
the network's cells are never split or changed. Measured in ``docs/benchmarks.md`` ("Whole cells").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Pixels between a watershed nucleus and every decoded cell for the nucleus to count as missed.
GAP = 2


def anchors_kernel(decoded: np.ndarray, nuclei: np.ndarray, window, core, offset: int):
    """Return the decoded cells on ``core`` plus the window's missed nuclei (ids ``offset + nucleus id``).

    Returns the core's anchors and the ids of the nuclei it added there. A nucleus is judged on the
    whole window, so blocks agree on it when the window holds the nucleus and its surroundings.
    """
    near = ndimage.binary_dilation(decoded > 0, iterations=GAP)
    touched = np.unique(nuclei[near & (nuclei > 0)])
    missed = np.setdiff1d(np.unique(nuclei[nuclei > 0]), touched)
    inner = core.within(window)
    cells, found = decoded[inner].astype(np.int32), nuclei[inner]
    add = (cells == 0) & np.isin(found, missed)
    cells[add] = found[add].astype(np.int64) + offset
    return cells, np.unique(found[add]).astype(np.int64)


def add_missed_nuclei(run, *, block_size: int, halo: int, client, scratch):
    """Return the anchors of a :class:`gsn.tl._segment.DecodeRun` (image frame) and how many nuclei were added."""
    from .._settings import settings
    from ..blockwise import RasterSource, block_grid, map_blocks
    from ..pp._watershed import DEFAULTS, watershed_blocks

    names = [str(c) for c in run.image.coords["c"].values]
    stain = run.image.isel(c=names.index(run.channels[0])).data  # the model's first channel: the nuclear stain
    shape = run.frames.image_shape
    nuclei = scratch.raster("nuclei", shape, np.int32, chunk=block_size)
    watershed_blocks(stain, nuclei, dict(DEFAULTS), block_size=block_size, halo=halo, client=client,
                     workers_read=scratch.shared)  # fmt: skip
    anchors = scratch.raster("anchors", shape, np.int32, chunk=block_size)
    decoded, nuclei_source = run.labels, RasterSource(nuclei)

    def inputs(block):
        window = block.grow(halo, shape)
        return decoded.read(window), nuclei_source.read(window), window, block, run.n_cells

    added = map_blocks(anchors_kernel, block_grid(shape, block_size), inputs, write=anchors, client=client,
                       workers_read=scratch.shared, progress=settings.progress, desc="missed nuclei")  # fmt: skip
    n_added = len(np.unique(np.concatenate(added))) if added else 0
    return RasterSource(anchors), n_added
