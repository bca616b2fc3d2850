"""Transcript-aware growth of nuclei into whole cells (pure arrays, no SpatialData).

The network and the level set of the paper see masks; neither tells how far a cell reaches beyond
its nucleus. The transcripts do: a cell's cytoplasm holds molecules at a higher rate than the
background. Growth turns nucleus-like labels plus transcript positions into whole-cell labels:

0. **Nuclei or whole cells?** Labels that already are whole cells (a network trained on cells, a
   vendor's cell segmentation) hold most of the molecules; nuclei hold less than
   :data:`NUCLEI_FRACTION` (the same rule as ``gsn.tl.train``'s ``prior="auto"``). Whole cells are
   eroded to their cores first and regrown like nuclei, so the transcripts (and the composition
   step) redraw their borders instead of only adding pixels around them. Nucleus labels are grown
   as they are.
1. **Rates.** The in-cell rate is measured on a thin ring just outside the nuclei (nuclei of real
   data are often crowded with molecules, the cytoplasm less so); the background rate on pixels far
   from every nucleus whose smoothed density is below half-way between the two, iterated.
2. **Extents.** Every pixel within ``max_distance`` goes to the nucleus whose edge is nearest. Each
   cell's territory is cut into angular sectors (as many as let each sector expect a few cytoplasm
   molecules) and, per sector, the extent along the distance from the nucleus is scored by the
   Poisson log-likelihood ratio of in-cell vs background of the pooled counts. A prior on extents is
   learned from the sectors of the sample (empirical Bayes, EM): sparse data lean on it, dense data
   on their counts. The extent is a posterior quantile (the most likely extent collapses to zero
   when counts are sparse), interpolated between neighbouring sectors.
3. **Composition.** Cells are clustered into types by expression (the number of types chosen by
   silhouette), per-type log-odds evidence maps are built from the transcripts, and each grown
   pixel goes to whichever of its few nearest nuclei best explains it, minus a distance penalty.
   Nuclei keep their pixels; each cell keeps only the piece attached to its nucleus; small holes are
   filled (filling every hole would close the real gaps between cells).

Whole slides are grown block by block: four per-block kernels (:func:`stats_kernel`,
:func:`sectors_kernel`, :func:`extent_kernel`, :func:`compose_kernel`) each read one block's window and
return results for its core; between them, the sample-wide quantities (rates, the prior on extents,
cell types) are fitted from what the blocks returned (:class:`Growth`). Unless the labels are
declared nuclei, a cheap first pass (:func:`census_kernel`: transcripts on the labels, the largest
label) decides between nuclei and whole cells; whole cells then pass through :func:`erode_kernel`
and the rates are fitted on their cores. Every quantity a core pixel
depends on lies within :meth:`Growth.halo` of it, so the result does not depend on the block size.
:func:`grow_labels` runs the same kernels on a whole image held in memory.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .._arrays import compact
from .._logging import logger
from ..blockwise import Window

# Ring just outside the nuclei on which the in-cell rate is measured (microns).
_RING_UM = 1.5
NUCLEI_FRACTION = 0.6
"""Labels holding less than this fraction of the transcripts on the image are nuclei, others whole cells."""
# Whole-cell labels are eroded by this much (microns) before they are grown.
_ERODE_UM = 1.5
KINDS = ("auto", "nuclei", "cells")
"""What the labels to grow are: judged from the data (``"auto"``), nuclei, or whole cells."""
# Smoothing of the transcript density used to tell background from cells (microns).
_DENSITY_SIGMA_UM = 2.0
# Each sector should expect this many cytoplasm molecules; bounds on the number of sectors.
_PER_SECTOR = 6.0
_MIN_SECTORS, _MAX_SECTORS = 1, 16
# Pseudo-count (molecules) that shrinks each cell's own in-cell rate toward the sample's.
_RATE_PRIOR_COUNTS = 10.0
# Smallest background rate, as a fraction of the in-cell rate (dense tissue can leave no background).
_MIN_BG_FRACTION = 0.02
# Holes up to this area (square microns) inside one cell are filled.
_HOLE_UM2 = 4.0
# Composition step: candidate nuclei per pixel, smoothing of the evidence (microns), distance penalty
# (log-odds per micron), and the range of numbers of cell types tried.
_CANDIDATES = 3
_EVIDENCE_SIGMA_UM = 1.0
_DISTANCE_PENALTY = 0.5
_TYPE_RANGE = (2, 10)
_MIN_CELL_COUNTS = 10
# Background densities are pooled in histogram bins of 1/32 of a doubling (log2 density from -40 to 12).
_BINS_PER_OCTAVE = 32
_LOG2_RANGE = (-40, 12)
_N_DENSITY_BINS = (_LOG2_RANGE[1] - _LOG2_RANGE[0]) * _BINS_PER_OCTAVE
# The prior on extents is fitted on at most this many sectors (cells chosen by id, whatever the blocks).
_MAX_PRIOR_SECTORS = 50_000
# Clustering into types is fitted on at most this many cells.
_MAX_CLUSTER_CELLS = 20_000


@dataclass
class GrowthReport:
    """What the growth estimated from the data (stored with the result)."""

    pixel_size: float
    max_distance_px: float
    rate_in: float
    rate_background: float
    n_sectors: int
    n_types: int
    n_cells: int
    prior_extent_px: float = 0.0
    pixels_moved_by_composition: int = 0
    kind: str = "nuclei"
    fraction_in_labels: float = float("nan")
    eroded_px: float = 0.0

    def as_dict(self) -> dict:
        """Return a plain dictionary (for ``uns``)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------- helpers
def _count_image(x: np.ndarray, y: np.ndarray, window: Window, weights=None) -> np.ndarray:
    """Transcripts per pixel of ``window`` (coordinates in the whole image's pixels)."""
    h, w = window.shape
    rows, cols = np.floor(y).astype(np.int64) - window.y0, np.floor(x).astype(np.int64) - window.x0
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = rows[inside] * w + cols[inside]
    wts = None if weights is None else weights[inside]
    return np.bincount(flat, weights=wts, minlength=h * w).reshape(h, w).astype(np.float32)


def _smoothed(x, y, weights, window: Window, sigma: float):
    """Gaussian-smoothed sums of ``weights`` at transcripts ``(x, y)``, on a grid ``f`` times coarser than pixels.

    The maps smoothed here (densities, evidence) vary over several pixels, so they are binned into
    squares of ``f = floor(sigma / 2)`` px, aligned on the whole image's grid (a window's result does
    not depend on where the window starts), smoothed with ``sigma / f`` and read back per pixel: ``f**2``
    fewer pixels and ``f`` times fewer filter taps. Returns ``(map, f, y0, x0)``: pixel ``(r, c)`` (whole
    image) reads ``map[r // f - y0, c // f - x0]``. Values are sums per pixel of the smoothing kernel
    (a normalised Gaussian's density of the weights per pixel).
    """
    f = max(1, int(sigma // 2))
    y0, x0 = window.y0 // f, window.x0 // f
    h, w = -(-window.y1 // f) - y0, -(-window.x1 // f) - x0
    rows, cols = np.floor(y).astype(np.int64) // f - y0, np.floor(x).astype(np.int64) // f - x0
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    wts = None if weights is None else weights[inside]
    grid = np.bincount(rows[inside] * w + cols[inside], weights=wts, minlength=h * w).reshape(h, w)
    grid = ndi.gaussian_filter(grid.astype(np.float32), sigma / f) / np.float32(f * f)
    return grid, f, y0, x0


def _read_smoothed(smoothed, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values of a :func:`_smoothed` map at whole-image pixels ``(rows, cols)``."""
    grid, f, y0, x0 = smoothed
    return grid[rows // f - y0, cols // f - x0]


def _density_bin(density: np.ndarray) -> np.ndarray:
    log = np.log2(np.maximum(density, 2.0 ** _LOG2_RANGE[0]))
    return np.clip(((log - _LOG2_RANGE[0]) * _BINS_PER_OCTAVE).astype(np.int64), 0, _N_DENSITY_BINS - 1)


def _bin_upper(bins: np.ndarray) -> np.ndarray:
    return 2.0 ** (_LOG2_RANGE[0] + (bins + 1) / _BINS_PER_OCTAVE)


@dataclass
class _Geometry:
    """Distances and owners of a window's pixels (nearest nucleus edge), and its cells' local indices."""

    cell_of: np.ndarray  # local index of the nucleus at each pixel, -1 elsewhere
    dist: np.ndarray  # distance (px) to the nearest nucleus pixel, 0 on nuclei
    owner: np.ndarray  # local index of that nucleus
    ids: np.ndarray  # global id of each local index (sorted)


def _geometry(nuclei: np.ndarray) -> _Geometry:
    ids, inverse = compact(nuclei)
    has_bg = len(ids) and ids[0] == 0
    cell_of = inverse.astype(np.int32, copy=False)
    if has_bg:
        cell_of -= 1
    ids = ids[1:] if has_bg else ids
    if len(ids) == 0:
        zeros = np.zeros(nuclei.shape, np.float32)
        return _Geometry(cell_of, zeros + np.inf, np.full(nuclei.shape, -1, np.int32), ids)
    dist, (iy, ix) = ndi.distance_transform_edt(cell_of < 0, return_indices=True)
    dist = dist.astype(np.float32)
    owner = cell_of[iy, ix]
    return _Geometry(cell_of, dist, owner, ids)


@dataclass
class Growth:
    """Sample-wide quantities of the growth, fitted step by step from what the blocks return.

    Built by :meth:`start` (pixel size and cap), completed by :meth:`fit_cells` (after
    :func:`census_kernel`), :meth:`fit_rates` (after :func:`stats_kernel`), :meth:`fit_prior` (after
    :func:`sectors_kernel`) and :meth:`fit_types` (after :func:`extent_kernel`). Per-cell arrays are
    indexed by position in ``cell_ids`` (sorted).
    """

    pixel_size: float
    cap: float
    quantile: float = 0.5
    seed: int = 0
    rate_in: float = 0.0
    rate_bg: float = 0.0
    n_sectors: int = 1
    prior: np.ndarray | None = None
    cell_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cx: np.ndarray = field(default_factory=lambda: np.zeros(0))
    area: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diameter: int = 0
    types: np.ndarray | None = None
    logodds: np.ndarray | None = None
    fraction_in_labels: float = float("nan")
    kind: str = "nuclei"

    @classmethod
    def start(cls, pixel_size: float | None, max_distance: float, *, quantile: float = 0.5, seed: int = 0) -> Growth:
        """Start the growth of labels at ``pixel_size`` microns (0.2 when unknown) up to ``max_distance`` microns."""
        px = 0.2 if pixel_size is None else float(pixel_size)
        return cls(pixel_size=px, cap=max(1.0, max_distance / px), quantile=quantile, seed=seed)

    def looks_whole(self) -> bool:
        """Whether the labels already are whole cells: they hold most transcripts (after :meth:`fit_rates`)."""
        return bool(np.isfinite(self.fraction_in_labels) and self.fraction_in_labels >= NUCLEI_FRACTION)

    @property
    def erode_px(self) -> float:
        """Depth (px) whole-cell labels are eroded to before growing."""
        return _ERODE_UM / self.pixel_size

    @property
    def ring_px(self) -> float:
        """Width of the ring outside the nuclei where the in-cell rate is measured (px)."""
        return max(1.5, _RING_UM / self.pixel_size)

    @property
    def density_sigma(self) -> float:
        """Smoothing of the transcript density (px)."""
        return _DENSITY_SIGMA_UM / self.pixel_size

    @property
    def n_bins(self) -> int:
        """Distance bins (one per pixel of distance) up to the cap."""
        return int(np.ceil(self.cap))

    def stats_halo(self) -> int:
        """Context the rates need around a block: the cap and the density smoothing's reach."""
        return int(np.ceil(self.cap + 4 * self.density_sigma)) + 2

    def halo(self) -> int:
        """Context every later step needs around a block (pixels).

        A core pixel's cell depends on its nucleus' whole territory (within ``cap + diameter`` of the
        pixel on the far side of the nucleus, plus ``cap``), and which pixels belong to that territory
        on the nuclei within ``cap`` of them: ``3 cap + diameter``. The smoothed evidence at the pixel
        reaches ``4 sigma``.
        """
        evidence = 4 * _EVIDENCE_SIGMA_UM / self.pixel_size
        return int(np.ceil(max(3 * self.cap + self.diameter, evidence))) + 2

    # ------------------------------------------------------------------------------------ fitting
    def fit_rates(self, stats: list[dict]) -> None:
        """Sample-wide rates, nucleus centroids and the number of sectors, from :func:`stats_kernel` results."""
        ring_sum = sum(s["ring_sum"] for s in stats)
        ring_area = sum(s["ring_area"] for s in stats)
        far_sum = np.sum([s["far_sum"] for s in stats], axis=0)
        far_area = np.sum([s["far_area"] for s in stats], axis=0)
        total_sum = sum(s["total_sum"] for s in stats)
        total_area = sum(s["total_area"] for s in stats)
        rate_in = ring_sum / ring_area if ring_area else total_sum / max(total_area, 1)
        rate_bg = far_sum.sum() / far_area.sum() if far_area.sum() else _MIN_BG_FRACTION * rate_in
        upper = _bin_upper(np.arange(_N_DENSITY_BINS))
        for _ in range(5):
            low = upper <= 0.5 * (rate_in + rate_bg)
            if not far_area[low].sum():
                break
            new = far_sum[low].sum() / far_area[low].sum()
            converged = abs(new - rate_bg) <= 1e-6 * max(rate_in, 1e-12)
            rate_bg = new
            if converged:
                break
        rate_bg = max(rate_bg, _MIN_BG_FRACTION * rate_in, 1e-9)
        self.rate_in, self.rate_bg = float(max(rate_in, 2.0 * rate_bg)), float(rate_bg)
        self.fit_cells(stats)
        if len(self.cell_ids):
            radius = np.sqrt(np.median(self.area) / np.pi)
            typical_extent = 0.5 * self.cap
            cyto_area = np.pi * ((radius + typical_extent) ** 2 - radius**2)
            self.n_sectors = int(np.clip(round(self.rate_in * cyto_area / _PER_SECTOR), _MIN_SECTORS, _MAX_SECTORS))

    def fit_cells(self, stats: list[dict]) -> None:
        """Fit the labels' ids, areas, centroids, largest extent and share of the transcripts.

        From :func:`stats_kernel` or :func:`census_kernel` results.
        """
        total_sum = sum(s["total_sum"] for s in stats)
        if total_sum:
            self.fraction_in_labels = float(sum(s["labels_sum"] for s in stats) / total_sum)
        ids = np.concatenate([s["ids"] for s in stats]).astype(np.int64)
        cells, inverse = compact(ids)

        def total(name):
            return np.bincount(inverse, weights=np.concatenate([s[name] for s in stats]), minlength=len(cells))

        def extreme(name, fn, init):
            out = np.full(len(cells), init, dtype=np.int64)
            fn.at(out, inverse, np.concatenate([s[name] for s in stats]))
            return out

        area = total("area")
        self.cell_ids, self.area = cells, area
        self.cy, self.cx = total("sum_rows") / np.maximum(area, 1), total("sum_cols") / np.maximum(area, 1)
        if len(cells):
            big = np.iinfo(np.int64).max
            extent = np.maximum(
                extreme("max_row", np.maximum, -1) - extreme("min_row", np.minimum, big),
                extreme("max_col", np.maximum, -1) - extreme("min_col", np.minimum, big),
            )
            self.diameter = int(extent.max()) + 1

    def prior_stride(self) -> int:
        """Every how many cells (by position in ``cell_ids``) the prior on extents is fitted on."""
        return max(1, int(np.ceil(len(self.cell_ids) * self.n_sectors / _MAX_PRIOR_SECTORS)))

    def fit_prior(self, likelihoods: list[np.ndarray], n_iter: int = 30) -> None:
        """Fit the prior over extents: the mean posterior of the informative sectors (EM on the mixture)."""
        like = np.concatenate([lk for lk in likelihoods if len(lk)]) if any(len(lk) for lk in likelihoods) else None
        n_ext = self.n_bins + 1
        prior = np.full(n_ext, 1.0 / n_ext)
        if like is not None:
            for _ in range(n_iter):
                post = like * prior
                post /= post.sum(axis=1, keepdims=True)
                new = 0.98 * post.mean(axis=0) + 0.02 / n_ext  # keep every extent possible
                if np.abs(new - prior).max() < 1e-6:
                    prior = new
                    break
                prior = new
        self.prior = prior

    def fit_types(self, counts, n_genes: int) -> None:
        """Cell types by expression (``counts``: cells in ``cell_ids`` order x genes, sparse) and their log-odds."""
        from scipy import sparse

        n = len(self.cell_ids)
        counts = sparse.csr_matrix(counts, shape=(n, n_genes))
        order = np.lexsort((self.cx, self.cy))  # a spatial order: types do not depend on how cells are numbered
        types = np.empty(n, dtype=np.int64)
        types[order] = cell_types(counts[order], self.seed)
        self.types = types
        n_types = int(types.max()) + 1 if n else 1
        if n_types < 2:
            self.logodds = None
            return
        onehot = sparse.csr_matrix((np.ones(n), (types, np.arange(n))), shape=(n_types, n))
        profiles = np.asarray((onehot @ counts).todense(), dtype=np.float64)
        profiles = (profiles + 0.5) / (profiles + 0.5).sum(axis=1, keepdims=True)
        self.logodds = np.clip(np.log(profiles / profiles.mean(axis=0)), -3.0, 3.0)  # (types, genes)

    @property
    def n_types(self) -> int:
        """Number of cell types found (1 before :meth:`fit_types` or when the cells are one type)."""
        return 1 if self.types is None or not len(self.types) else int(self.types.max()) + 1

    # ------------------------------------------------------------------------------------ per window
    def cells_near(self, window: Window) -> np.ndarray:
        """Positions (in ``cell_ids``) of the cells whose centroid lies within a territory of ``window``."""
        m = self.cap + self.diameter
        return np.flatnonzero(
            (self.cy >= window.y0 - m)
            & (self.cy < window.y1 + m)
            & (self.cx >= window.x0 - m)
            & (self.cx < window.x1 + m)
        )

    def report(self, moved: int = 0) -> GrowthReport:
        """Return what was estimated, for ``uns``."""
        prior_extent = float(np.sum(self.prior * np.arange(len(self.prior)))) if self.prior is not None else 0.0
        return GrowthReport(self.pixel_size, self.cap, self.rate_in, self.rate_bg, self.n_sectors, self.n_types,
                            len(self.cell_ids), prior_extent, moved, self.kind, self.fraction_in_labels,
                            self.erode_px if self.kind == "cells" else 0.0)  # fmt: skip


# --------------------------------------------------------------------------------------------- kernels
def stats_kernel(growth: Growth, nuclei: np.ndarray, window: Window, core: Window, x, y) -> dict:
    """Pass 1: ring and background counts on the core, and each nucleus' pixels on the core."""
    geo = _geometry(nuclei)
    counts = _count_image(x, y, window)
    inner = core.within(window)
    dist, cnt = geo.dist[inner], counts[inner]
    ring = (dist > 0) & (dist <= growth.ring_px)
    far = dist > growth.cap
    far_r, far_c = np.nonzero(far)
    density = _read_smoothed(_smoothed(x, y, None, window, growth.density_sigma), far_r + core.y0, far_c + core.x0)
    bins = _density_bin(density)
    out = {
        "ring_sum": float(cnt[ring].sum()), "ring_area": int(ring.sum()),
        "labels_sum": float(cnt[dist == 0].sum()),
        "total_sum": float(cnt.sum()), "total_area": int(cnt.size),
        "far_sum": np.bincount(bins, weights=cnt[far], minlength=_N_DENSITY_BINS),
        "far_area": np.bincount(bins, minlength=_N_DENSITY_BINS).astype(np.float64),
    }  # fmt: skip
    return {**out, **_cells_on_core(nuclei[inner], core)}  # fmt: skip


def census_kernel(labels: np.ndarray, core: Window, x, y) -> dict:
    """Pass 0 (unless ``kind="nuclei"``): transcripts on the core and on its labels, the labels' pixels.

    What decides between nuclei and whole cells, and how far whole cells reach, without the rates'
    distance maps and densities (those are measured after, on nuclei or on the cells' cores).
    """
    counts = _count_image(x, y, core)
    return {"labels_sum": float(counts[labels > 0].sum()), "total_sum": float(counts.sum()),
            **_cells_on_core(labels, core)}  # fmt: skip


def _cells_on_core(core_labels: np.ndarray, core: Window) -> dict:
    """Each label's pixel count, coordinate sums and bounding box on the core (whole-image pixels)."""
    rr, cc = np.nonzero(core_labels)
    ids, inv = compact(core_labels[rr, cc])
    out = {"ids": ids, "area": np.bincount(inv, minlength=len(ids)).astype(np.float64),
           "sum_rows": np.bincount(inv, weights=rr + core.y0, minlength=len(ids)),
           "sum_cols": np.bincount(inv, weights=cc + core.x0, minlength=len(ids))}  # fmt: skip
    for name, values, fn, init in (
        ("min_row", rr, np.minimum, np.iinfo(np.int64).max),
        ("max_row", rr, np.maximum, -1),
        ("min_col", cc, np.minimum, np.iinfo(np.int64).max),
        ("max_col", cc, np.maximum, -1),
    ):
        arr = np.full(len(ids), init, dtype=np.int64)
        fn.at(arr, inv, values + (core.y0 if "row" in name else core.x0))
        out[name] = arr
    return out


def erode_labels(labels: np.ndarray, depth: float) -> np.ndarray:
    """Return each cell's pixels at least ``depth`` px inside it (its core).

    Depth counts from the cell's own border, background or another cell, so a gap opens where
    cells touch. A cell thinner than ``2 depth`` keeps its deepest pixels: no cell is lost.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    _, inverse = compact(labels)
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    d = ndi.distance_transform_edt(inside).astype(np.float32)
    deepest = np.zeros(int(inverse.max()) + 1 if inverse.size else 0, np.float32)
    np.maximum.at(deepest, inverse.ravel(), d.ravel())
    keep = (d >= np.minimum(np.float32(depth), deepest[inverse])) & (labels > 0)
    return np.where(keep, labels, 0).astype(labels.dtype, copy=False)


def erode_kernel(labels: np.ndarray, window: Window, core: Window, depth: float) -> np.ndarray:
    """Return the cores (:func:`erode_labels`) on ``core``; exact when the window holds the core's cells whole."""
    return erode_labels(labels, depth)[core.within(window)].astype(np.int32)


def _sector_tables(growth: Growth, geo: _Geometry, counts: np.ndarray, window: Window, local: np.ndarray, where):
    """Per (cell, sector, distance bin) areas and counts over the territory pixels of the local cells ``local``."""
    h, w = counts.shape
    n_s, n_bins = growth.n_sectors, growth.n_bins
    terr = (geo.dist > 0) & (geo.dist <= growth.cap)
    pt = np.flatnonzero(terr.ravel())
    c = geo.owner.ravel()[pt]
    keep = where[c]
    pt, c = pt[keep], c[keep]
    d = geo.dist.ravel()[pt]
    n_at = counts.ravel()[pt]
    py, pxx = np.divmod(pt, w)
    cy, cx = local["cy"][c] - window.y0, local["cx"][c] - window.x0
    theta = np.arctan2(py - cy, pxx - cx)
    u = (theta + np.pi) / (2 * np.pi) * n_s
    s = np.minimum(np.floor(u).astype(np.int64), n_s - 1)
    k = np.clip(np.ceil(d).astype(np.int64) - 1, 0, n_bins - 1)  # bin j holds distances (j, j + 1]
    n_local = len(local["cy"])
    flat = (c * n_s + s) * n_bins + k
    size = n_local * n_s * n_bins
    area_b = np.bincount(flat, minlength=size).reshape(n_local * n_s, n_bins).astype(np.float64)
    count_b = np.bincount(flat, weights=n_at, minlength=size).reshape(n_local * n_s, n_bins)
    ring_sel = d <= growth.ring_px
    ring_area = np.bincount(c[ring_sel], minlength=n_local)
    ring_count = np.bincount(c[ring_sel], weights=n_at[ring_sel], minlength=n_local)
    return area_b, count_b, ring_area, ring_count, (pt, c, d, u)


def _likelihoods(growth: Growth, area_b, count_b, ring_area, ring_count):
    """Likelihood (up to a constant per sector) of every extent, per sector; and which sectors saw any pixel."""
    n_s = growth.n_sectors
    pseudo_area = _RATE_PRIOR_COUNTS / growth.rate_in
    cell_rate = (ring_count + _RATE_PRIOR_COUNTS) / (ring_area + pseudo_area)
    cell_rate = np.maximum(cell_rate, 1.5 * growth.rate_bg)
    lam_in = np.repeat(cell_rate, n_s)[:, None]
    gain = count_b * np.log(lam_in / growth.rate_bg) - area_b * (lam_in - growth.rate_bg)
    llr = np.concatenate([np.zeros((len(gain), 1)), np.cumsum(gain, axis=1)], axis=1)
    like = np.exp(llr - llr.max(axis=1, keepdims=True))
    return like, area_b.sum(axis=1) > 0


def _local_cells(growth: Growth, geo: _Geometry, positions: np.ndarray) -> dict:
    """Per-cell arrays for the window's local cells (``geo.ids``), looked up among the cells near it."""
    where = positions[np.searchsorted(growth.cell_ids[positions], geo.ids)] if len(geo.ids) else positions[:0]
    return {"pos": where, "cy": growth.cy[where], "cx": growth.cx[where], "area": growth.area[where]}


def sectors_kernel(growth: Growth, nuclei, window: Window, core: Window, x, y, positions) -> np.ndarray:
    """Pass 2: extent likelihoods of the sectors of the sampled cells whose centroid lies on the core."""
    geo = _geometry(nuclei)
    local = _local_cells(growth, geo, positions)
    stride = growth.prior_stride()
    own = core.contains(np.floor(local["cy"]), np.floor(local["cx"])) & (local["pos"] % stride == 0)
    if not own.any():
        return np.zeros((0, growth.n_bins + 1))
    counts = _count_image(x, y, window)
    area_b, count_b, ring_area, ring_count, _ = _sector_tables(growth, geo, counts, window, local, own)
    like, valid = _likelihoods(growth, area_b, count_b, ring_area, ring_count)
    rows = np.repeat(own, growth.n_sectors) & valid
    return like[rows]


def _grow_window(growth: Growth, geo: _Geometry, counts: np.ndarray, window: Window, local: dict) -> np.ndarray:
    """Cells (local indices, -1 background) grown on the window: nuclei plus each sector's extent."""
    n_s = growth.n_sectors
    everyone = np.ones(len(local["cy"]), dtype=bool)
    area_b, count_b, ring_area, ring_count, (pt, c, d, u) = _sector_tables(growth, geo, counts, window, local,
                                                                          everyone)  # fmt: skip
    like, _ = _likelihoods(growth, area_b, count_b, ring_area, ring_count)
    post = like * growth.prior
    post /= post.sum(axis=1, keepdims=True)
    extent = (np.cumsum(post, axis=1) < growth.quantile).sum(axis=1).reshape(-1, n_s).astype(np.float32)
    # interpolate the extent between the two nearest sector centres
    v = u - 0.5
    s0 = np.floor(v).astype(np.int64) % n_s
    s1 = (s0 + 1) % n_s
    frac = (v - np.floor(v)).astype(np.float32)
    ext = (1 - frac) * extent[c, s0] + frac * extent[c, s1]
    keep = d <= ext
    grown = np.where(geo.cell_of >= 0, geo.cell_of, -1).ravel()
    grown[pt[keep]] = c[keep]
    return grown.reshape(geo.cell_of.shape)


def extent_kernel(growth: Growth, nuclei, window: Window, core: Window, x, y, genes, positions):
    """Pass 3: cells grown by their extents on the core (global ids), and the core's (cell, gene) counts."""
    geo = _geometry(nuclei)
    local = _local_cells(growth, geo, positions)
    grown = _grow_window(growth, geo, _count_image(x, y, window), window, local)
    ids = np.where(grown >= 0, geo.ids[np.maximum(grown, 0)] if len(geo.ids) else 0, 0).astype(np.int32)
    core_ids = ids[core.within(window)]
    on = core.contains(np.floor(y), np.floor(x))
    cell = core_ids[np.floor(y[on]).astype(np.int64) - core.y0, np.floor(x[on]).astype(np.int64) - core.x0]
    g = np.asarray(genes)[on].astype(np.int64)
    g, cell = g[cell > 0], cell[cell > 0].astype(np.int64)
    return core_ids, (cell, g)


def compose_kernel(growth: Growth, nuclei, grown, window: Window, core: Window, x, y, genes, positions):
    """Pass 4: borders between touching cells moved by composition, attached pieces, small holes; core labels."""
    geo = _geometry(nuclei)
    local = _local_cells(growth, geo, positions)
    n_local = len(geo.ids)
    # grown labels (global ids) back to local indices; cells whose nucleus is not in the window drop out
    current = np.full(grown.shape, -1, dtype=np.int32)
    if n_local:
        top = max(int(grown.max()), int(geo.ids[-1]))
        lut = np.full(top + 1, -1, dtype=np.int32)
        lut[geo.ids] = np.arange(n_local, dtype=np.int32)
        current = lut[grown]
    if growth.logodds is not None and n_local > 1:
        current, _ = _composition(growth, geo, current, window, local, x, y, genes, positions)
    out = np.where(current >= 0, geo.ids[np.maximum(current, 0)] if n_local else 0, 0).astype(np.int32)
    out = _keep_attached(out, nuclei)
    out = _fill_small_holes(out, int(round(_HOLE_UM2 / growth.pixel_size**2)))
    inner = core.within(window)
    # pixels of the core whose cell the composition changed
    return out[inner], int(np.count_nonzero((out[inner] != grown[inner]) & (out[inner] > 0) & (grown[inner] > 0)))


def _composition(growth: Growth, geo: _Geometry, grown, window, local, x, y, genes, positions):
    """Reassign grown (non-nucleus) pixels to the candidate nucleus whose cell type explains them best."""
    from scipy.spatial import cKDTree

    h, w = grown.shape
    px, cap = growth.pixel_size, growth.cap
    movable = (grown >= 0) & (geo.cell_of < 0)
    pix = np.flatnonzero(movable.ravel())
    if len(pix) == 0:
        return grown, 0
    # candidates: the nearest centroids among all cells near the window (global positions)
    near_cy, near_cx = growth.cy[positions] - window.y0, growth.cx[positions] - window.x0
    py, pxx = np.divmod(pix, w)
    k = min(_CANDIDATES, len(positions))
    _, cand = cKDTree(np.column_stack([near_cy, near_cx])).query(np.column_stack([py, pxx]), k=k)
    cand_pos = positions[np.asarray(cand).reshape(len(pix), k)]
    current = grown.ravel()[pix]
    cur_pos = local["pos"][current]
    cand_pos = np.column_stack([cur_pos, cand_pos])
    rad = np.sqrt(growth.area[cand_pos] / np.pi)
    dy, dx = py[:, None] - (growth.cy[cand_pos] - window.y0), pxx[:, None] - (growth.cx[cand_pos] - window.x0)
    edge = np.maximum(np.hypot(dy, dx) - rad, 0.0) * px
    edge[:, 0] = geo.dist.ravel()[pix] * px  # exact for the current owner
    sigma = _EVIDENCE_SIGMA_UM / px
    rows, cols = np.floor(y).astype(np.int64) - window.y0, np.floor(x).astype(np.int64) - window.x0
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    g = np.asarray(genes)[inside].astype(np.int64)
    cand_type = growth.types[cand_pos]
    score = np.zeros(cand_pos.shape, dtype=np.float32)
    gx, gy = x[inside], y[inside]
    for t in range(growth.logodds.shape[0]):
        if not (cand_type == t).any():
            continue
        ev = _read_smoothed(_smoothed(gx, gy, growth.logodds[t, g], window, sigma), py + window.y0, pxx + window.x0)
        score = np.where(cand_type == t, ev[:, None] * np.float32(2 * np.pi * sigma**2), score)
    score -= _DISTANCE_PENALTY * edge
    score[edge > cap * px] = -np.inf
    best_pos = cand_pos[np.arange(len(pix)), np.argmax(score, axis=1)]
    # back to local indices; a candidate without a nucleus in the window cannot take the pixel
    order = np.argsort(local["pos"])
    at = np.searchsorted(local["pos"][order], best_pos)
    at = np.minimum(at, len(order) - 1)
    found = local["pos"][order][at] == best_pos
    best = np.where(found, order[at], current)
    moved = int(np.count_nonzero(best != current))
    out = grown.copy().ravel()
    out[pix] = best
    return out.reshape(h, w), moved


def cell_types(counts, seed: int) -> np.ndarray:
    """Cluster cells (rows of a counts matrix, dense or sparse) into types; the number chosen by silhouette."""
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    counts = sparse.csr_matrix(counts, dtype=np.float64)
    n_cells = counts.shape[0]
    totals = np.asarray(counts.sum(axis=1)).ravel()
    usable = totals >= _MIN_CELL_COUNTS
    types = np.zeros(n_cells, dtype=np.int64)
    if usable.sum() < 3 * _TYPE_RANGE[0] or counts.shape[1] < 2:
        return types
    rng = np.random.default_rng(seed)

    def normalised(rows: np.ndarray) -> np.ndarray:
        sub = counts[rows]
        scaled = sparse.diags(1e3 / np.maximum(totals[rows], 1)) @ sub
        return np.log1p(scaled.toarray())

    fit_rows = np.flatnonzero(usable)
    if len(fit_rows) > _MAX_CLUSTER_CELLS:
        fit_rows = np.sort(rng.choice(fit_rows, _MAX_CLUSTER_CELLS, replace=False))
    fit_data = normalised(fit_rows)
    n_comp = int(min(15, fit_data.shape[1] - 1, len(fit_rows) - 1))
    pca = PCA(n_components=n_comp, random_state=seed).fit(fit_data)
    emb_fit = pca.transform(fit_data)
    sub = np.arange(len(fit_rows))
    if len(sub) > 3000:
        sub = rng.choice(sub, 3000, replace=False)
    best, best_score = None, -np.inf
    for k in range(_TYPE_RANGE[0], min(_TYPE_RANGE[1], len(sub) // 3) + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(emb_fit)
        score = silhouette_score(emb_fit[sub], km.predict(emb_fit[sub]))
        if score > best_score:
            best, best_score = km, score
    if best is None:
        return types
    for start in range(0, n_cells, _MAX_CLUSTER_CELLS):
        rows = np.arange(start, min(start + _MAX_CLUSTER_CELLS, n_cells))
        types[rows] = best.predict(pca.transform(normalised(rows)))
    return types


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected pieces of a mask (int32 labels, their number)."""
    out = np.zeros(mask.shape, dtype=np.int32)
    n = ndi.label(mask, output=out)
    return out, int(n)


def _keep_attached(labels: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Keep, for every cell, only the connected pieces that touch its own nucleus."""
    from skimage.measure import label as cc

    pieces = cc(labels, connectivity=1, background=0)  # 4-connected pixels of equal label
    n = int(pieces.max())
    touches = np.zeros(n + 1, dtype=bool)
    own = (nuclei > 0) & (labels == nuclei)
    touches[np.unique(pieces[own])] = True
    touches[0] = False
    return np.where(touches[pieces], labels, 0)


def _fill_small_holes(labels: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background pockets of at most ``max_area`` pixels surrounded by a single cell."""
    holes, _ = _pieces(labels == 0)
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_area
    small[0] = False
    if not small[1:].any():
        return labels
    h, w = labels.shape
    # For every pocket, the smallest and largest label on its 4-neighbour rim: one cell if they agree.
    lo = np.full(len(sizes), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(len(sizes), -1, dtype=np.int64)
    edge = np.zeros(len(sizes), dtype=bool)  # pockets touching the image border are not holes
    border = np.zeros((h, w), dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    edge[np.unique(holes[border])] = True
    lab = labels.astype(np.int64)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        src = holes[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        nb = lab[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
        sel = (src > 0) & (nb > 0)
        np.minimum.at(lo, src[sel], nb[sel])
        np.maximum.at(hi, src[sel], nb[sel])
    fill = small & ~edge & (hi >= 0) & (lo == hi)
    out = labels.copy()
    mask = fill[holes]
    out[mask] = lo[holes[mask]].astype(labels.dtype)
    return out


# --------------------------------------------------------------------------------------------- driver
def grow_blockwise(
    source, index, *, pixel_size: float | None, max_distance: float = 8.0, quantile: float = 0.5,
    composition: bool = True, kind: str = "auto", seed: int = 0, scratch, block_size: int, client=None,
    progress: bool = True,
):  # fmt: skip
    """Grow the nucleus labels of ``source`` (``.shape``, ``.read(window)``) with the transcripts of ``index``.

    Four passes of the block driver with the sample-wide fits between them (see the module docstring).
    Returns a :class:`gsn.blockwise.RasterSource` of the grown labels (same ids), a :class:`GrowthReport`
    and the halo (pixels) that holds any grown cell whole.
    """
    from scipy import sparse

    from ..blockwise import RasterSource, block_grid, map_blocks

    shape = tuple(source.shape)
    blocks = block_grid(shape, block_size)
    growth = Growth.start(pixel_size, max_distance, quantile=quantile, seed=seed)

    def tx(block_window, genes: bool = False):
        t = index.window(block_window)
        return (t.x, t.y, t.gene) if genes else (t.x, t.y)

    halo = growth.stats_halo()

    def stats_inputs(block):
        window = block.grow(halo, shape)
        return source.read(window), window, block, *tx(window)

    def fit_rates(growth: Growth) -> None:
        growth.fit_rates(map_blocks(stats_kernel, blocks, stats_inputs, shared=(growth,), client=client,
                                    workers_read=scratch.shared, progress=progress, desc="growth: rates"))  # fmt: skip

    if kind != "nuclei":
        # a cheap first look decides; whole cells then skip the rates on their full extent
        growth.fit_cells(map_blocks(census_kernel, blocks, lambda block: (source.read(block), block, *tx(block)),
                                    client=client, workers_read=scratch.shared, progress=progress,
                                    desc="growth: census"))  # fmt: skip
    if len(growth.cell_ids) and (kind == "cells" or (kind == "auto" and growth.looks_whole())):
        # whole cells: grow from their cores, with rates measured around the cores
        cores = scratch.raster("cores", shape, np.int32, chunk=block_size)
        erode_halo = growth.diameter + int(np.ceil(growth.erode_px)) + 2

        def erode_inputs(block):
            window = block.grow(erode_halo, shape)
            return source.read(window), window, block, growth.erode_px

        map_blocks(erode_kernel, blocks, erode_inputs, write=cores, client=client, workers_read=scratch.shared,
                   progress=progress, desc="growth: cores")  # fmt: skip
        fraction, source = growth.fraction_in_labels, RasterSource(cores)
        growth = Growth.start(pixel_size, max_distance, quantile=quantile, seed=seed)
        growth.kind = "cells"
        fit_rates(growth)
        growth.fraction_in_labels = fraction
    else:
        fit_rates(growth)
    if not len(growth.cell_ids):
        return source, growth.report(), 0
    if index.n_inside == 0:
        logger.warning("No transcripts on the labels: cells cannot be grown and are returned as they are.")
        return source, growth.report(), growth.diameter
    halo = growth.halo()

    def inputs(block, genes=False):
        window = block.grow(halo, shape)
        return source.read(window), window, block, *tx(window, genes), growth.cells_near(window)

    likelihoods = map_blocks(sectors_kernel, blocks, inputs, shared=(growth,), client=client,
                             workers_read=scratch.shared, progress=progress, desc="growth: prior")  # fmt: skip
    growth.fit_prior(likelihoods)
    del likelihoods

    grown = scratch.raster("grown", shape, np.int32, chunk=block_size)
    pairs = map_blocks(extent_kernel, blocks, functools.partial(inputs, genes=True), shared=(growth,),
                       write=grown, client=client, workers_read=scratch.shared, progress=progress,
                       desc="growth: extents")  # fmt: skip
    if not composition or len(growth.cell_ids) < 2:
        report = growth.report()
        logger.info("Grew %d cells: rates in %.4g / background %.4g per px, %d sectors", report.n_cells,
                    report.rate_in, report.rate_background, report.n_sectors)  # fmt: skip
        return RasterSource(grown), report, growth.halo()
    cells = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.int64)
    genes = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, np.int64)
    n_genes = len(index.genes)
    rows = np.searchsorted(growth.cell_ids, cells)
    counts = sparse.coo_matrix((np.ones(len(rows)), (rows, genes)), shape=(len(growth.cell_ids), n_genes)).tocsr()
    growth.fit_types(counts, n_genes)

    final = scratch.raster("composed", shape, np.int32, chunk=block_size)
    grown_source = RasterSource(grown)

    def compose_inputs(block):
        window = block.grow(halo, shape)
        return (source.read(window), grown_source.read(window), window, block, *tx(window, True),
                growth.cells_near(window))  # fmt: skip

    moved = map_blocks(compose_kernel, blocks, compose_inputs, shared=(growth,), write=final, client=client,
                       workers_read=scratch.shared, progress=progress, desc="growth: composition")  # fmt: skip
    report = growth.report(int(sum(moved)))
    logger.info("Grew %d cells: rates in %.4g / background %.4g per px, %d sectors, %d types", report.n_cells,
                report.rate_in, report.rate_background, report.n_sectors, report.n_types)  # fmt: skip
    return RasterSource(final), report, growth.halo()


def grow_labels(
    nuclei: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    genes: np.ndarray | None = None,
    *,
    pixel_size: float | None = None,
    max_distance: float = 8.0,
    quantile: float = 0.5,
    composition: bool = True,
    kind: str = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, GrowthReport]:
    """Grow nucleus-like labels into whole cells with the transcripts.

    The in-memory form of what :func:`gsn.tl.grow_cells` and :func:`gsn.tl.segment` run block by block.

    Parameters
    ----------
    nuclei
        ``(H, W)`` integer labels (0 = background); any ids. Each id should be one nucleus or cell
        core; it keeps all its pixels.
    x, y
        Transcript coordinates in pixels of ``nuclei`` (column, row).
    genes
        Integer gene code per transcript (for the composition step); ``None`` skips that step.
    pixel_size
        Microns per pixel. ``None``: assume 0.2 µm (the scale the defaults were chosen at).
    max_distance
        How far (microns) a cell may extend beyond its nucleus.
    quantile
        Posterior quantile of each sector's extent (higher: larger cells).
    composition
        Let gene composition move the borders between touching cells.
    kind
        What the labels are: ``"nuclei"`` (grown as they are), ``"cells"`` (already whole cells:
        eroded by 1.5 µm to their cores, then grown, so the transcripts redraw their borders) or
        ``"auto"`` (cells when the labels hold at least 0.6 of the transcripts on the image).
    seed
        Seed of the clustering.

    Returns
    -------
    The whole-cell labels (same ids as ``nuclei``, int32) and a :class:`GrowthReport`.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")
    from ..blockwise import ArraySource, Scratch, Transcripts

    nuclei = np.asarray(nuclei)
    h, w = nuclei.shape
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    codes = np.zeros(len(x), np.int32) if genes is None else np.asarray(genes).astype(np.int32)
    t = Transcripts(x[inside], y[inside], codes[inside], np.flatnonzero(inside))
    index = _InMemoryIndex(t, (h, w), int(codes.max()) + 1 if len(codes) else 0)
    with Scratch(in_memory_bytes=1 << 62) as scratch:
        grown, report, _ = grow_blockwise(
            ArraySource(nuclei.astype(np.int64)), index, pixel_size=pixel_size, max_distance=max_distance,
            quantile=quantile, composition=composition and genes is not None, kind=kind, seed=seed, scratch=scratch,
            block_size=max(h, w, 1), progress=False,
        )  # fmt: skip
        out = grown.read(Window(0, h, 0, w)).astype(np.int32)
    return out, report


class _InMemoryIndex:
    """Transcripts held as arrays, with the :class:`gsn.blockwise.TranscriptIndex` interface growth uses."""

    def __init__(self, t, shape, n_genes: int):
        self.t, self.shape, self.n_inside = t, shape, len(t)
        self.genes = np.arange(n_genes)

    def window(self, window: Window, margin: float = 0.0):
        t = self.t
        return t.select((t.x >= window.x0 - margin) & (t.x < window.x1 + margin) & (t.y >= window.y0 - margin)
                        & (t.y < window.y1 + margin))  # fmt: skip
