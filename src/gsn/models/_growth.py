"""Transcript-aware growth of nuclei into whole cells (pure arrays, no SpatialData).

The network and the level set of the paper see masks; neither tells how far a cell reaches beyond
its nucleus. The transcripts do: a cell's cytoplasm holds molecules at a higher rate than the
background. :func:`grow_labels` turns nucleus-like labels plus transcript positions into whole-cell
labels in three vectorised steps:

1. **Rates.** The in-cell rate is measured on a thin ring just outside the nuclei (nuclei of real
   data are often crowded with molecules, the cytoplasm less so); the background rate on pixels far
   from every nucleus whose smoothed density is below half-way between the two, iterated.
2. **Extents.** Every pixel within ``max_distance`` goes to the nucleus whose edge is nearest. Each
   cell's territory is cut into angular sectors (as many as let each sector expect a few cytoplasm
   molecules) and, per sector, the extent along the distance from the nucleus is scored by the
   Poisson log-likelihood ratio of in-cell vs background of the pooled counts. A prior on extents is
   learned from all sectors of the sample (empirical Bayes, EM): sparse data lean on it, dense data
   on their counts. The extent is a posterior quantile (the most likely extent collapses to zero
   when counts are sparse), interpolated between neighbouring sectors.
3. **Composition.** Cells are clustered into types by expression (the number of types chosen by
   silhouette), per-type log-odds evidence maps are built from the transcripts, and each grown
   pixel goes to whichever of its few nearest nuclei best explains it, minus a distance penalty.
   Nuclei keep their pixels; each cell keeps only the piece attached to its nucleus; small holes are
   filled (filling every hole would close the real gaps between cells).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from .._logging import logger

# Ring just outside the nuclei on which the in-cell rate is measured (microns).
_RING_UM = 1.5
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


@dataclass
class GrowthReport:
    """What :func:`grow_labels` estimated from the data (stored with the result)."""

    pixel_size: float
    max_distance_px: float
    rate_in: float
    rate_background: float
    n_sectors: int
    n_types: int
    n_cells: int
    prior_extent_px: float = 0.0
    pixels_moved_by_composition: int = 0

    def as_dict(self) -> dict:
        """Plain dictionary (for ``uns``)."""
        return asdict(self)


def _count_image(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], weights=None) -> np.ndarray:
    h, w = shape
    rows, cols = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = rows[inside] * w + cols[inside]
    wts = None if weights is None else weights[inside]
    return np.bincount(flat, weights=wts, minlength=h * w).reshape(h, w).astype(np.float32)


def estimate_rates(
    counts: np.ndarray, dist: np.ndarray, *, ring_px: float, far_px: float, sigma_px: float, n_iter: int = 5
) -> tuple[float, float]:
    """In-cell and background transcript rates (molecules per pixel).

    ``dist`` is the distance of each pixel to the nearest nucleus (0 on nuclei). The in-cell rate is
    the mean count on the ring ``0 < dist <= ring_px``; the background rate the mean count of pixels
    farther than ``far_px`` whose smoothed density is below half-way between the two rates.
    """
    ring = (dist > 0) & (dist <= ring_px)
    rate_in = float(counts[ring].mean()) if ring.any() else float(counts.mean())
    density = ndi.gaussian_filter(counts, sigma_px)
    far = dist > far_px
    rate_bg = float(counts[far].mean()) if far.any() else _MIN_BG_FRACTION * rate_in
    for _ in range(n_iter):
        low = far & (density < 0.5 * (rate_in + rate_bg))
        if not low.any():
            break
        new = float(counts[low].mean())
        if abs(new - rate_bg) <= 1e-6 * max(rate_in, 1e-12):
            rate_bg = new
            break
        rate_bg = new
    rate_bg = max(rate_bg, _MIN_BG_FRACTION * rate_in, 1e-9)
    rate_in = max(rate_in, 2.0 * rate_bg)
    return rate_in, rate_bg


def _sector_extents(llr: np.ndarray, valid: np.ndarray, quantile: float, n_iter: int = 30):
    """Posterior-quantile extent per sector from log-likelihood ratios ``llr`` (sectors x extents).

    The prior over extents is the mean posterior of all informative sectors (EM on the mixture).
    Returns extents in bins (sectors,) and the learned prior.
    """
    n_ext = llr.shape[1]
    prior = np.full(n_ext, 1.0 / n_ext)
    shifted = llr - llr.max(axis=1, keepdims=True)
    like = np.exp(shifted)
    for _ in range(n_iter):
        post = like * prior
        post /= post.sum(axis=1, keepdims=True)
        new = post[valid].mean(axis=0) if valid.any() else prior
        new = 0.98 * new + 0.02 / n_ext  # keep every extent possible
        if np.abs(new - prior).max() < 1e-6:
            prior = new
            break
        prior = new
    post = like * prior
    post /= post.sum(axis=1, keepdims=True)
    cdf = np.cumsum(post, axis=1)
    extent = (cdf < quantile).sum(axis=1)
    return extent, prior


def _cell_types(counts, seed: int) -> np.ndarray:
    """Cluster cells (rows of a dense counts matrix) into types; the number chosen by silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    n_cells = counts.shape[0]
    totals = counts.sum(axis=1)
    usable = totals >= _MIN_CELL_COUNTS
    types = np.zeros(n_cells, dtype=np.int64)
    if usable.sum() < 3 * _TYPE_RANGE[0] or counts.shape[1] < 2:
        return types
    norm = np.log1p(counts / np.maximum(totals[:, None], 1) * 1e3)
    n_comp = int(min(15, norm.shape[1] - 1, usable.sum() - 1))
    pca = PCA(n_components=n_comp, random_state=seed).fit(norm[usable])
    emb = pca.transform(norm)
    rng = np.random.default_rng(seed)
    sub = np.flatnonzero(usable)
    if len(sub) > 3000:
        sub = rng.choice(sub, 3000, replace=False)
    best, best_score = None, -np.inf
    for k in range(_TYPE_RANGE[0], min(_TYPE_RANGE[1], len(sub) // 3) + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(emb[usable])
        score = silhouette_score(emb[sub], km.predict(emb[sub]))
        if score > best_score:
            best, best_score = km, score
    return best.predict(emb) if best is not None else types


def _keep_attached(labels: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Keep, for every cell, only the connected pieces that touch its own nucleus."""
    from skimage.measure import label as cc

    pieces = cc(labels, connectivity=1, background=0)
    n = int(pieces.max())
    touches = np.zeros(n + 1, dtype=bool)
    own = (nuclei > 0) & (labels == nuclei)
    touches[np.unique(pieces[own])] = True
    touches[0] = False
    return np.where(touches[pieces], labels, 0)


def _fill_small_holes(labels: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background pockets of at most ``max_area`` pixels surrounded by a single cell."""
    from skimage.measure import label as cc

    holes = cc(labels == 0, connectivity=1)
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
    seed: int = 0,
) -> tuple[np.ndarray, GrowthReport]:
    """Grow nucleus-like labels into whole cells with the transcripts.

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
    seed
        Seed of the clustering.

    Returns
    -------
    The whole-cell labels (same ids as ``nuclei``, int32) and a :class:`GrowthReport`.
    """
    nuclei = np.asarray(nuclei)
    h, w = nuclei.shape
    px = 0.2 if pixel_size is None else float(pixel_size)
    cap = max(1.0, max_distance / px)
    ring_px = max(1.5, _RING_UM / px)
    ids, inverse = np.unique(nuclei, return_inverse=True)
    inverse = inverse.reshape(nuclei.shape)
    has_bg = ids[0] == 0
    n = len(ids) - int(has_bg)
    cell_of = inverse - 1 if has_bg else inverse  # -1 = background, 0..n-1 = cells
    counts = _count_image(x, y, (h, w))
    report = GrowthReport(px, cap, 0.0, 0.0, 0, 0, n)
    if n == 0:
        return np.zeros((h, w), np.int32), report
    if counts.sum() == 0:
        logger.warning("No transcripts on the labels: cells cannot be grown and are returned as they are.")
        return nuclei.astype(np.int32), report

    dist, (iy, ix) = ndi.distance_transform_edt(cell_of < 0, return_indices=True)
    dist = dist.astype(np.float32)
    owner = cell_of[iy, ix]
    del iy, ix
    rate_in, rate_bg = estimate_rates(counts, dist, ring_px=ring_px, far_px=cap, sigma_px=_DENSITY_SIGMA_UM / px)
    report.rate_in, report.rate_background = rate_in, rate_bg

    # nucleus centroids and sizes
    nuc = cell_of >= 0
    ny, nx = np.divmod(np.flatnonzero(nuc.ravel()), w)
    area = np.bincount(cell_of[nuc], minlength=n).astype(np.float64)
    cy = np.bincount(cell_of[nuc], weights=ny, minlength=n) / np.maximum(area, 1)
    cx = np.bincount(cell_of[nuc], weights=nx, minlength=n) / np.maximum(area, 1)

    # sectors: each should expect a few cytoplasm molecules at the in-cell rate
    radius = np.sqrt(np.median(area) / np.pi)
    typical_extent = 0.5 * cap
    cyto_area = np.pi * ((radius + typical_extent) ** 2 - radius**2)
    n_sectors = int(np.clip(round(rate_in * cyto_area / _PER_SECTOR), _MIN_SECTORS, _MAX_SECTORS))
    report.n_sectors = n_sectors

    terr = (dist > 0) & (dist <= cap)
    pt = np.flatnonzero(terr.ravel())
    c = owner.ravel()[pt].astype(np.int64)
    d = dist.ravel()[pt]
    n_at = counts.ravel()[pt]
    py, pxx = np.divmod(pt, w)
    theta = np.arctan2(py - cy[c], pxx - cx[c])
    u = (theta + np.pi) / (2 * np.pi) * n_sectors
    s = np.minimum(np.floor(u).astype(np.int64), n_sectors - 1)
    n_bins = int(np.ceil(cap))
    k = np.clip(np.ceil(d).astype(np.int64) - 1, 0, n_bins - 1)  # bin j holds distances (j, j + 1]
    cell_sector = c * n_sectors + s
    flat = cell_sector * n_bins + k
    size = n * n_sectors * n_bins
    area_b = np.bincount(flat, minlength=size).reshape(n * n_sectors, n_bins).astype(np.float64)
    count_b = np.bincount(flat, weights=n_at, minlength=size).reshape(n * n_sectors, n_bins)

    # each cell's own in-cell rate, shrunk toward the sample's (cells differ in expression)
    ring_sel = d <= ring_px
    ring_area = np.bincount(c[ring_sel], minlength=n)
    ring_count = np.bincount(c[ring_sel], weights=n_at[ring_sel], minlength=n)
    pseudo_area = _RATE_PRIOR_COUNTS / rate_in
    cell_rate = (ring_count + _RATE_PRIOR_COUNTS) / (ring_area + pseudo_area)
    cell_rate = np.maximum(cell_rate, 1.5 * rate_bg)
    lam_in = np.repeat(cell_rate, n_sectors)[:, None]
    gain = count_b * np.log(lam_in / rate_bg) - area_b * (lam_in - rate_bg)
    llr = np.concatenate([np.zeros((n * n_sectors, 1)), np.cumsum(gain, axis=1)], axis=1)
    valid = area_b.sum(axis=1) > 0
    extent_bins, prior = _sector_extents(llr, valid, quantile)
    report.prior_extent_px = float(np.sum(prior * np.arange(len(prior))))
    extent = extent_bins.reshape(n, n_sectors).astype(np.float32)

    # interpolate the extent between the two nearest sector centres
    v = u - 0.5
    s0 = np.floor(v).astype(np.int64) % n_sectors
    s1 = (s0 + 1) % n_sectors
    frac = (v - np.floor(v)).astype(np.float32)
    ext = (1 - frac) * extent[c, s0] + frac * extent[c, s1]
    keep = d <= ext
    grown = np.where(nuc, cell_of, -1).ravel()
    grown[pt[keep]] = c[keep]
    grown = grown.reshape(h, w)

    if composition and genes is not None and n > 1:
        grown, moved, n_types = _composition(grown, cell_of, dist, cap, cy, cx, area, x, y, genes, px, seed)
        report.pixels_moved_by_composition, report.n_types = moved, n_types

    out = np.where(grown >= 0, ids[np.maximum(grown, 0) + int(has_bg)], 0).astype(np.int32)
    out = _keep_attached(out, nuclei)
    out = _fill_small_holes(out, int(round(_HOLE_UM2 / px**2)))
    logger.info(
        "Grew %d cells: rates in %.4g / background %.4g per px, %d sectors, %d types",
        n, rate_in, rate_bg, n_sectors, report.n_types,
    )  # fmt: skip
    return out, report


def _composition(grown, cell_of, dist, cap, cy, cx, area, x, y, genes, px, seed):
    """Reassign grown (non-nucleus) pixels to the candidate nucleus whose cell type explains them best."""
    from scipy.spatial import cKDTree

    h, w = grown.shape
    n = len(area)
    genes = np.asarray(genes, dtype=np.int64)
    n_genes = int(genes.max()) + 1 if len(genes) else 0
    rows, cols = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & (genes >= 0)
    rows, cols, g = rows[inside], cols[inside], genes[inside]
    cell_tx = grown[rows, cols]
    in_cell = cell_tx >= 0
    mat = np.zeros((n, n_genes))
    np.add.at(mat, (cell_tx[in_cell], g[in_cell]), 1.0)
    # cluster in a spatial order so the result does not depend on how the cells are numbered
    order = np.lexsort((cx, cy))
    types = np.empty(n, dtype=np.int64)
    types[order] = _cell_types(mat[order], seed)
    n_types = int(types.max()) + 1
    if n_types < 2:
        return grown, 0, 1
    profiles = np.zeros((n_types, n_genes))
    np.add.at(profiles, types, mat)
    profiles = (profiles + 0.5) / (profiles + 0.5).sum(axis=1, keepdims=True)
    mean = profiles.mean(axis=0)
    logodds = np.clip(np.log(profiles / mean), -3.0, 3.0)  # (types, genes)

    # candidate pixels: grown, outside nuclei
    movable = (grown >= 0) & (cell_of < 0)
    pix = np.flatnonzero(movable.ravel())
    if len(pix) == 0:
        return grown, 0, n_types
    py, pxx = np.divmod(pix, w)
    tree = cKDTree(np.column_stack([cy, cx]))
    k = min(_CANDIDATES, n)
    _, cand = tree.query(np.column_stack([py, pxx]), k=k)
    cand = np.asarray(cand).reshape(len(pix), k)
    current = grown.ravel()[pix]
    cand = np.column_stack([current, cand])
    # edge distance ~ centroid distance minus the nucleus' equivalent radius (microns)
    rad = np.sqrt(area / np.pi)
    edge = np.maximum(np.hypot(py[:, None] - cy[cand], pxx[:, None] - cx[cand]) - rad[cand], 0.0) * px
    edge[:, 0] = dist.ravel()[pix] * px  # exact for the current owner
    sigma = _EVIDENCE_SIGMA_UM / px
    flat_tx = rows * w + cols
    score = np.zeros(cand.shape, dtype=np.float32)
    cand_type = types[cand]
    for t in range(n_types):
        ev = np.bincount(flat_tx, weights=logodds[t, g], minlength=h * w).reshape(h, w)
        ev = ndi.gaussian_filter(ev.astype(np.float32), sigma) * (2 * np.pi * sigma**2)
        score = np.where(cand_type == t, ev.ravel()[pix][:, None], score)
    score -= _DISTANCE_PENALTY * edge
    score[edge > cap * px] = -np.inf
    best = cand[np.arange(len(pix)), np.argmax(score, axis=1)]
    moved = int(np.count_nonzero(best != current))
    out = grown.copy().ravel()
    out[pix] = best
    out = out.reshape(h, w)
    return out, moved, n_types
