"""Transcripts by window: one pass over the points, then any block reads only its own molecules.

The points element (a dask dataframe, possibly far larger than memory) is read one partition at a
time. Each partition's transcripts are mapped into the target raster's pixels, given integer gene
codes and their row position in the element, and sorted by coarse square buckets; the sorted runs
are kept in memory while small and spilled to the scratch folder beyond that. A window then reads,
from every run, the buckets under it. Transcripts come back sorted by row, so whatever the block
size, a window's molecules are in one canonical order (float sums over them do not change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._grid import Window
from ._raster import serial_io

# Side of the buckets (pixels of the target frame).
BUCKET = 256
# Runs are kept in memory up to this many bytes in all, then spilled to the scratch folder.
IN_MEMORY_BYTES = 64 * 1024 * 1024


@dataclass
class Transcripts:
    """Transcripts of a window: pixel coordinates ``x``, ``y`` (float64, the full frame), gene codes, row positions."""

    x: np.ndarray
    y: np.ndarray
    gene: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def empty(cls) -> Transcripts:
        """No transcripts."""
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int64))

    def select(self, mask: np.ndarray) -> Transcripts:
        """Return the transcripts where ``mask`` is true."""
        return Transcripts(self.x[mask], self.y[mask], self.gene[mask], self.row[mask])

    def inside(self, window: Window) -> Transcripts:
        """Return the transcripts whose pixel ``(floor(y), floor(x))`` lies in ``window``."""
        return self.select((self.y >= window.y0) & (self.y < window.y1) & (self.x >= window.x0) & (self.x < window.x1))


_RECORD = np.dtype([("x", "<f8"), ("y", "<f8"), ("gene", "<i4"), ("row", "<i8")])


class _Run:
    """One partition's transcripts sorted by bucket (records of :data:`_RECORD`), with each bucket's start.

    In memory, or spilled to a file that windows read with plain file reads (not a memory map, whose
    touched pages would count as this process's resident memory).
    """

    def __init__(self, records: np.ndarray, starts: np.ndarray):
        self.records: np.ndarray | None = records
        self.starts = starts
        self.n = len(records)
        self.path: Path | None = None

    def spill(self, path: Path) -> None:
        self.records.tofile(path)
        self.path, self.records = path, None

    @property
    def nbytes(self) -> int:
        return 0 if self.records is None else self.records.nbytes

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self.records is not None:
            return self.records[lo:hi]
        with open(self.path, "rb") as f:
            f.seek(lo * _RECORD.itemsize)
            return np.fromfile(f, dtype=_RECORD, count=hi - lo)


class TranscriptIndex:
    """Transcripts of a points element in the pixel frame of a raster, readable by window.

    Build it with :meth:`from_points`. ``genes`` are the gene names (codes index them), ``n`` the
    number of rows of the points element, ``n_inside`` those that fall on the raster.
    """

    def __init__(self, runs: list[_Run], genes: pd.Index, shape: tuple[int, int], n: int, bucket: int = BUCKET):
        self.runs = runs
        self.genes = genes
        self.shape = shape
        self.n = n
        self.bucket = bucket
        self._nbx = -(-shape[1] // bucket)
        self._nby = -(-shape[0] // bucket)
        self.n_inside = int(sum(r.n for r in runs))

    @classmethod
    def from_points(
        cls,
        points,
        matrix: np.ndarray,
        shape: tuple[int, int],
        *,
        points_key: str,
        image_key: str,
        scratch=None,
        bucket: int = BUCKET,
    ) -> TranscriptIndex:
        """Index a (dask) points element: one pass, one partition at a time.

        Parameters
        ----------
        points
            The points element (dask or pandas dataframe with ``x``, ``y`` and a gene column).
        matrix
            3 x 3 affine from the points' coordinates to the raster's pixels (see
            :func:`gsn._transcripts.points_to_pixel_matrix`).
        shape
            ``(H, W)`` of the raster.
        points_key, image_key
            Names used in error messages.
        scratch
            A :class:`gsn.blockwise.Scratch` to spill to; ``None`` keeps everything in memory.
        bucket
            Bucket side in pixels.
        """
        from .._elements import gene_column
        from .._transcripts import CoordinateSummary, apply_affine, check_genes

        col = gene_column(points, points_key)
        genes = _gene_names(points, col)
        h, w = shape
        nbx, nby = -(-w // bucket), -(-h // bucket)
        runs: list[_Run] = []
        summary = CoordinateSummary()
        offset = 0
        in_memory = 0
        # Workers that read their own windows (a shared scratch folder) need every run on disk.
        limit = 0 if getattr(scratch, "shared", False) else IN_MEMORY_BYTES
        # One delayed object per partition: each is read once, in order, without the client
        # building a selection expression per partition.
        selected = points[["x", "y", col]]
        parts = selected.to_delayed() if hasattr(selected, "to_delayed") else [selected]
        for part in parts:
            with serial_io():
                df = part.compute(scheduler="synchronous") if hasattr(part, "compute") else part
            check_genes(df[col], points_key=points_key, column=col)
            x, y = apply_affine(matrix, df["x"].to_numpy(np.float64), df["y"].to_numpy(np.float64))
            chunk, inside = CoordinateSummary.of(np.asarray(x, np.float64), np.asarray(y, np.float64), shape)
            summary = summary + chunk
            codes = _codes(df[col], genes)
            rows = np.arange(offset, offset + len(df), dtype=np.int64)
            offset += len(df)
            x, y, codes, rows = x[inside], y[inside], codes[inside], rows[inside]
            key = (np.floor(y).astype(np.int64) // bucket) * nbx + np.floor(x).astype(np.int64) // bucket
            order = np.argsort(key, kind="stable")
            starts = np.searchsorted(key[order], np.arange(nbx * nby + 1)).astype(np.int64)
            records = np.empty(len(order), dtype=_RECORD)
            records["x"], records["y"], records["gene"], records["row"] = x[order], y[order], codes[order], rows[order]
            run = _Run(records, starts)
            in_memory += run.nbytes
            runs.append(run)
            if scratch is not None and in_memory > limit:
                for i, r in enumerate(runs):
                    if r.records is not None:
                        r.spill(scratch.folder / f"transcripts-{i}.bin")
                in_memory = 0
        summary.check(shape, points_key=points_key, image_key=image_key)
        return cls(runs, genes, (h, w), offset, bucket)

    def window(self, window: Window, margin: float = 0.0) -> Transcripts:
        """Transcripts with ``x`` in ``[x0 - margin, x1 + margin)`` and ``y`` likewise, sorted by row position."""
        b = self.bucket
        y_lo, y_hi = window.y0 - margin, window.y1 + margin
        x_lo, x_hi = window.x0 - margin, window.x1 + margin
        by0, by1 = max(int(np.floor(y_lo)) // b, 0), min(int(np.ceil(y_hi)) // b, self._nby - 1)
        bx0, bx1 = max(int(np.floor(x_lo)) // b, 0), min(int(np.ceil(x_hi)) // b, self._nbx - 1)
        pieces = []
        for run in self.runs:
            for by in range(by0, by1 + 1):
                lo, hi = run.starts[by * self._nbx + bx0], run.starts[by * self._nbx + bx1 + 1]
                if hi > lo:
                    pieces.append(run.read(lo, hi))
        if not pieces:
            return Transcripts.empty()
        rec = np.concatenate(pieces)
        t = Transcripts(rec["x"].copy(), rec["y"].copy(), rec["gene"].copy(), rec["row"].copy())
        keep = (t.x >= x_lo) & (t.x < x_hi) & (t.y >= y_lo) & (t.y < y_hi)
        t = t.select(keep)
        return t.select(np.argsort(t.row, kind="stable"))

    def everything(self) -> Transcripts:
        """Return all transcripts on the raster (for small images), sorted by row position."""
        return self.window(Window(0, self.shape[0], 0, self.shape[1]))


def _codes(values: pd.Series, genes: pd.Index) -> np.ndarray:
    """Integer code of every value in ``genes`` (categorical columns are looked up by category, not row)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        lut = genes.get_indexer(values.cat.categories.astype(str)).astype(np.int32)
        return lut[values.cat.codes.to_numpy()]
    return genes.get_indexer(values.astype(str)).astype(np.int32)


def _gene_names(points, col: str) -> pd.Index:
    """Gene names in the order their codes index them: the categories when the column is categorical."""
    import dask

    column = points[col]
    # In this process, like every read of the driver: with a distributed Client active, dask would
    # otherwise send this one pass over the points to the cluster as a shuffle (slower on one machine).
    with dask.config.set({"scheduler": "synchronous", "dataframe.shuffle.method": "tasks"}):
        known = not (hasattr(column, "cat") and hasattr(column.cat, "known") and not column.cat.known)
        if isinstance(column.dtype, pd.CategoricalDtype) and known:
            return pd.Index(column.cat.categories.astype(str))
        # Categories unknown to dask (points read from parquet) or plain strings: the sorted names
        # present, so the gene order does not depend on how the element's graph was built.
        values = column.dropna().unique()
        values = values.compute() if hasattr(values, "compute") else values
    return pd.Index(sorted(str(v) for v in values))
