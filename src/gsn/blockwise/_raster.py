"""Whole-image rasters that block kernels write core by core and read window by window.

A whole-slide step never holds a whole-slide array in memory: intermediate rasters (network maps,
decoded nuclei, grown cells, final labels) live in a scratch folder as zarr arrays chunked like the
block grid, so each block writes whole chunks of its core and reads the chunks under its window.
Small rasters stay in memory (a numpy array); both kinds behave the same.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._grid import Window

# Rasters up to this many bytes are kept in memory; larger ones go to the scratch folder. Small enough
# that a whole-slide run holds no raster of the slide's size (a 4096 x 4096 int32 image is 64 MiB).
IN_MEMORY_BYTES = 32 * 1024 * 1024


class Raster:
    """An array of shape ``(..., H, W)`` read and written by windows of its last two axes.

    Parameters
    ----------
    shape
        Full shape; the last two axes are the image's rows and columns.
    dtype
        Element type.
    chunk
        Side of the square chunks on disk (the block size of the grid that writes it).
    path
        Folder of the zarr array; ``None`` keeps the raster in memory.
    """

    def __init__(self, shape: tuple[int, ...], dtype, *, chunk: int, path: Path | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path = path
        self.chunk = int(chunk)
        if path is None:
            self._data = np.zeros(self.shape, self.dtype)
        else:
            import zarr

            chunks = (*self.shape[:-2], min(chunk, self.shape[-2]), min(chunk, self.shape[-1]))
            self._data = zarr.create_array(
                store=str(path), shape=self.shape, chunks=chunks, dtype=self.dtype, fill_value=0,
                compressors=None, overwrite=True,
            )  # fmt: skip

    @property
    def in_memory(self) -> bool:
        """True when the raster is a numpy array in this process."""
        return self.path is None

    def whole_chunks(self, window: Window) -> bool:
        """Whether ``window`` covers whole chunks only (two processes may then write two such windows at once)."""
        c, (h, w) = self.chunk, self.shape[-2:]
        return (
            window.y0 % c == 0 and window.x0 % c == 0
            and (window.y1 % c == 0 or window.y1 == h) and (window.x1 % c == 0 or window.x1 == w)
        )  # fmt: skip

    def read(self, window: Window, planes=None) -> np.ndarray:
        """Return the raster under ``window`` (a copy); ``planes`` selects along the first axis."""
        index = (..., *window.slices) if planes is None else (planes, *window.slices)
        return np.array(self._data[index])

    def write(self, window: Window, values: np.ndarray) -> None:
        """Write ``values`` (shape ``(..., h, w)`` of ``window``)."""
        self._data[(..., *window.slices)] = values

    def to_numpy(self) -> np.ndarray:
        """Return the whole raster as a numpy array (for images small enough to hold)."""
        return self._data if self.path is None else np.asarray(self._data[...])

    def to_dask(self):
        """Return the whole raster as a lazy dask array chunked like the raster."""
        import dask.array as da

        if self.path is None:
            return da.from_array(self._data, chunks=self._data.shape)
        return da.from_zarr(self._data)


class Scratch:
    """Rasters of one whole-slide run: in memory when small, else in a temporary folder removed on exit.

    Parameters
    ----------
    root
        Parent folder of the temporary folder (default: ``gsn.settings.scratch_dir``, else the
        system's temporary folder).
    in_memory_bytes
        Rasters up to this size stay in memory.
    """

    def __init__(self, root: str | Path | None = None, *, in_memory_bytes: int | None = None):
        self.root = root
        self.in_memory_bytes = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
        self._dir: Path | None = None
        self._kept: set[str] = set()
        self.shared = False

    def share_with(self, client, store=None) -> bool:
        """Put every later raster on disk if all workers of ``client`` see the scratch folder (and ``store``).

        Then the block driver lets the workers read their windows and write their cores themselves
        (``map_blocks(..., workers_read=scratch.shared)``). ``store`` is the zarr store the inputs are
        read from (``sdata.path``), if any: the workers must see it too. Workers on other machines,
        without the folder, get their inputs from this process as before. Returns whether the folder
        is shared.
        """
        if client is None:
            return False
        token = self.folder / ".shared"
        token.touch()
        paths = [str(token)] + ([str(Path(store).resolve())] if store is not None else [])
        seen = client.run(_all_exist, paths)
        self.shared = bool(seen) and all(seen.values())
        if self.shared:
            self.in_memory_bytes = 0
        return self.shared

    @classmethod
    def shared_with(cls, client, store=None) -> Scratch:
        """Return a new scratch folder, shared with the workers of ``client`` where they see it (:meth:`share_with`)."""
        scratch = cls()
        try:
            scratch.share_with(client, store)
        except BaseException:
            scratch.close()
            raise
        return scratch

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def folder(self) -> Path:
        """The temporary folder (made on first use)."""
        if self._dir is None:
            from .._settings import settings

            self._dir = Path(tempfile.mkdtemp(prefix="gsn-", dir=self.root or settings.scratch_dir))
        return self._dir

    def raster(self, name: str, shape: tuple[int, ...], dtype, *, chunk: int, keep: bool = False) -> Raster:
        """Return a new zero-filled raster; ``keep=True`` leaves its folder behind on :meth:`close` (an output)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes < self.in_memory_bytes:
            return Raster(shape, dtype, chunk=chunk)
        if keep:
            self._kept.add(name)
        return Raster(shape, dtype, chunk=chunk, path=self.folder / f"{name}.zarr")

    def close(self) -> None:
        """Delete the temporary folder, except the rasters made with ``keep=True``."""
        if self._dir is None:
            return
        if self._kept:
            for child in self._dir.iterdir():
                if child.stem not in self._kept:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            if not any(self._dir.iterdir()):  # the kept outputs were moved or removed meanwhile
                self._dir.rmdir()
                self._dir = None
        else:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _all_exist(paths: list[str]) -> bool:
    import os

    return all(os.path.exists(p) for p in paths)


def serial_io():
    """Context in which zarr reads and writes chunks in one thread.

    A whole-slide step reads one window at a time; zarr's pool of codec threads then buys little
    speed, and each of its threads keeps its own heap, which grew this process's resident memory
    by hundreds of MB over a slide.
    """
    import zarr

    return zarr.config.set({"threading.max_workers": 1})


def materialize(values):
    """Return a numpy array from a numpy, dask or xarray value, computed in this thread.

    gsn cuts each block's inputs from lazy arrays; computing them synchronously keeps a dask
    ``Client`` (if one is active) from pulling the reads onto its cluster, and keeps the allocations
    of this process in one heap instead of one per dask thread (which inflated resident memory).
    """
    values = getattr(values, "data", values) if hasattr(values, "dims") else values
    if hasattr(values, "compute"):
        values = values.compute(scheduler="synchronous")
    return np.asarray(values)


class ArraySource:
    """A 2D array (numpy, dask, xarray) read by window; ``check`` validates each window as it is read."""

    def __init__(self, array, check=None):
        self.array = array.data if hasattr(array, "dims") else array
        self.shape = tuple(int(s) for s in self.array.shape[-2:])
        self.check = check

    def read(self, window: Window) -> np.ndarray:
        """Return the values under ``window`` as numpy."""
        values = materialize(self.array[window.slices])
        return self.check(values) if self.check is not None else values


class RasterSource:
    """A 2D :class:`Raster` read by window (the same interface as :class:`ArraySource`)."""

    def __init__(self, raster: Raster):
        self.raster = raster
        self.shape = raster.shape[-2:]

    def read(self, window: Window) -> np.ndarray:
        """Return the values under ``window``."""
        return self.raster.read(window)
