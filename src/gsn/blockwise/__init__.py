"""Block-wise execution of whole-slide steps: one grid, one driver, rasters and transcripts by window.

Internal to gsn. A step is a pure kernel on the arrays of one block's window (numpy in, numpy out);
:func:`map_blocks` runs it over a :func:`block_grid`, in this process or on a dask cluster; kernels
read their inputs from :class:`Raster` objects and a :class:`TranscriptIndex` by :class:`Window`, and
write their block's core back. A window is a block's core plus a halo wide enough for everything the
core's pixels depend on, so results do not depend on the block size.
"""

from ._driver import map_blocks, warm_up
from ._grid import Block, Window, block_grid
from ._raster import ArraySource, Raster, RasterSource, Scratch, materialize, serial_io
from ._transcripts import TranscriptIndex, Transcripts

# Default side of the blocks (pixels) of every whole-slide step, and the context read around a block of
# labels (pixels): it must exceed the largest cell for that cell's polygon to be traced whole.
BLOCK_SIZE = 1024
LABELS_HALO = 256


def block_options(block_size: int | None, halo: int | None) -> tuple[int, int]:
    """Return a public step's ``block_size`` and ``halo`` (``None``: the defaults), checked."""
    block_size = BLOCK_SIZE if block_size is None else int(block_size)
    halo = LABELS_HALO if halo is None else int(halo)
    if block_size < 64 or halo < 0:
        raise ValueError(f"`block_size` must be >= 64 and `halo` >= 0, got {block_size} and {halo}.")
    return block_size, halo


__all__ = [
    "BLOCK_SIZE",
    "LABELS_HALO",
    "ArraySource",
    "Block",
    "RasterSource",
    "Raster",
    "Scratch",
    "TranscriptIndex",
    "Transcripts",
    "Window",
    "block_grid",
    "block_options",
    "map_blocks",
    "materialize",
    "serial_io",
    "warm_up",
]
