"""Square blocks covering an image, and the windows (block plus halo) that per-block kernels read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """A rectangle ``[y0, y1) x [x0, x1)`` of an image, in its pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """Slices of the window in the image."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.y1 - self.y0, self.x1 - self.x0

    def grow(self, margin: int, shape: tuple[int, int]) -> Window:
        """Return this window extended by ``margin`` pixels on every side, clipped to an image of ``shape``."""
        h, w = shape
        return Window(
            max(self.y0 - margin, 0), min(self.y1 + margin, h), max(self.x0 - margin, 0), min(self.x1 + margin, w)
        )

    def within(self, outer: Window) -> tuple[slice, slice]:
        """Slices of this window inside an array that holds ``outer``."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)

    def contains(self, rows, cols):
        """Boolean mask of the points ``(rows, cols)`` (arrays, pixel coordinates) inside the window."""
        return (rows >= self.y0) & (rows < self.y1) & (cols >= self.x0) & (cols < self.x1)

    def on_inner_border(self, shape: tuple[int, int], rows, cols):
        """Mask of pixels ``(rows, cols)`` (local to this window) on a border of it that is not the image's."""
        h, w = shape
        return (
            ((rows == 0) & (self.y0 > 0))
            | ((rows == self.y1 - self.y0 - 1) & (self.y1 < h))
            | ((cols == 0) & (self.x0 > 0))
            | ((cols == self.x1 - self.x0 - 1) & (self.x1 < w))
        )

    def reaching_border(self, labels, shape: tuple[int, int], among):
        """Return the ids of ``among`` whose pixels in ``labels`` touch a border of this window that is not the image's.

        ``labels`` is this window's label array, ``among`` e.g. the labels on the block's core: the
        result are the objects the window may have cut (its halo was too narrow for them).
        """
        import numpy as np

        h, w = shape
        sides = ((labels[0], self.y0 > 0), (labels[-1], self.y1 < h), (labels[:, 0], self.x0 > 0),
                 (labels[:, -1], self.x1 < w))  # fmt: skip
        edges = [edge for edge, inner in sides if inner]
        if not edges:
            return np.zeros(0, labels.dtype)
        among = np.asarray(among)
        return np.intersect1d(among[among > 0], np.concatenate(edges))


@dataclass(frozen=True)
class Block(Window):
    """One block of a grid: its core ``[y0, y1) x [x0, x1)`` and its position ``index`` in the grid."""

    index: int = 0


def _cuts(length: int, block_size: int) -> list[int]:
    """Cuts of ``[0, length)`` at multiples of ``block_size``; the last piece is 0.5 to 1.5 times it."""
    n = max(1, int(round(length / block_size)))
    return [i * block_size for i in range(n)] + [length]


def block_grid(shape: tuple[int, int], block_size: int) -> list[Block]:
    """Cover an image of ``shape`` with blocks of ``block_size`` a side, row by row.

    Blocks start at multiples of ``block_size``, so each block's core is whole chunks of a raster
    chunked by ``block_size`` (workers then write their cores side by side without touching a
    neighbour's chunk). The remainder along an axis joins the last block when it is under half a
    block (a thin block costs nearly as much context as a full one and, on a cluster, leaves a
    worker idle), so the last block is 0.5 to 1.5 times ``block_size``.
    """
    h, w = int(shape[0]), int(shape[1])
    if block_size < 1:
        raise ValueError(f"`block_size` must be >= 1, got {block_size}.")
    rows, cols = _cuts(h, block_size), _cuts(w, block_size)
    out = []
    for y0, y1 in zip(rows[:-1], rows[1:], strict=True):
        for x0, x1 in zip(cols[:-1], cols[1:], strict=True):
            out.append(Block(y0, y1, x0, x1, index=len(out)))
    return out
