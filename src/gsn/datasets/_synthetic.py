"""Seeded synthetic tissue with ground truth: the project's yardstick for accuracy against truth.

The generative model, step by step (every step draws from its own child of one
:class:`numpy.random.SeedSequence`, so changing, say, ``n_genes`` leaves the geometry unchanged):

1. **Seeds.** Cell centres by iterated Matérn-II thinning (a vectorised random-sequential-adsorption
   process): two centres keep at least ``0.75 * (r_i + r_j)`` apart, so tissue is dense but not a
   lattice.
2. **Cells.** Each cell is an ellipse of nominal radius ``r`` (area ``pi r^2``), aspect ratio drawn
   from ``elongation`` and random orientation, with a ragged outline (low angular harmonics). A
   pixel belongs to the cell of smallest normalised elliptical distance (a multiplicatively weighted,
   anisotropic Voronoi diagram), as long as that distance is below ``1.3``: cells grow until they
   meet a neighbour, and leave gaps where centres are sparse. Only the piece holding the centre is
   kept.
3. **Nuclei.** A smaller ellipse per cell (radius ``nucleus_scale * r``, own orientation close to the
   cell's, milder elongation), displaced from the cell centre by up to ``nucleus_offset`` of the
   free room, clipped to the cell's interior. Every cell has exactly one nucleus with the cell's id.
4. **Image.** Nuclei only: per-nucleus brightness (log-normal), a dome profile and chromatin
   texture, faint cytoplasmic autofluorescence, Gaussian optical blur, a smooth multiplicative
   illumination field, a background offset, Poisson shot noise and Gaussian read noise; ``uint16``.
5. **Transcripts.** Per cell a negative-binomial count whose mean scales with the cell's area,
   positions uniform over the whole cell (cytoplasm included, a little denser in the nucleus), genes
   from the cell's type profile (a Dirichlet profile per type with marker genes, and a per-cell
   Dirichlet perturbation). Cell types form spatial niches. Background molecules are uniform over
   the image with a flat gene profile and ``true_cell_id == 0`` wherever they fall.
6. **Prior labels.** What a classical nucleus segmenter would give from the image: background
   subtraction, a local threshold, and a watershed of the smoothed intensity from its local maxima.
   Noise, texture and uneven illumination make it miss dim nuclei and split some elongated ones;
   ``prior_errors`` adds merges of neighbouring nuclei and further misses on top.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["synthetic"]

_REACH = 1.3
"""Cells grow up to this multiple of their nominal (elliptical) radius."""
_SEED_SPACING = 0.75
"""Minimum distance between two cell centres, as a fraction of the sum of their nominal radii."""
_MIN_CELL_AREA = 20
_MIN_NUCLEUS_AREA = 6
_SIGNAL = 2000.0
"""Mean nucleus intensity (counts) before illumination and noise."""
_OFFSET = 300.0
"""Camera / background offset (counts)."""
_CYTO_SIGNAL = 0.04
"""Cytoplasmic autofluorescence relative to the nucleus signal."""
_ILLUMINATION = 0.35
"""Standard deviation of the log of the smooth illumination field."""
_NUCLEUS_BOOST = 1.5
"""Molecule density in the nucleus relative to the cytoplasm."""
_NB_SHAPE = 5.0
"""Shape of the Gamma mixing distribution for per-cell molecule counts (negative binomial)."""
_WEAK_BRIGHTNESS = 0.25
"""Brightness of a weakly stained nucleus relative to its drawn brightness."""

HARD = {"cytoplasm_rna": (0.25, 0.8), "cytoplasm_decay": 6.0, "profile_overlap": 0.6, "weak_nuclei": 0.15}
"""The harder yardstick: RNA-poor cytoplasm that varies between cells and thins away from the nucleus,
overlapping type profiles and some weakly stained nuclei (``synthetic(**HARD)``)."""
_PRIOR_REL_THRESHOLD = 0.3
"""Prior labels: foreground where the background-subtracted image exceeds this fraction of its local maximum."""


def _as_range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    if np.isscalar(value):
        lo = hi = float(value)
    else:
        lo, hi = (float(v) for v in value)
    if not (0 < lo <= hi):
        raise ValueError(f"`{name}` must be a positive number or a (low, high) range with low <= high, got {value!r}.")
    return lo, hi


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, n: int = 1, at: np.ndarray | None = None
) -> np.ndarray:
    """Smooth random fields with unit variance and correlation length ~`scale` px.

    Returns `n` fields of `shape`, or, if `at` (``(m, 2)`` row/col positions) is given, their values
    there only, shape ``(n, m)``.
    """
    h, w = shape
    gh, gw = math.ceil(h / scale) + 4, math.ceil(w / scale) + 4
    coarse = ndi.gaussian_filter(rng.standard_normal((n, gh, gw)), sigma=(0, 0.7, 0.7), mode="wrap")
    coarse -= coarse.mean(axis=(1, 2), keepdims=True)
    coarse /= coarse.std(axis=(1, 2), keepdims=True) + 1e-12
    from scipy.interpolate import RectBivariateSpline

    knots_y, knots_x = np.arange(gh) - 1.5, np.arange(gw) - 1.5  # knot j sits at pixel (j - 1.5) * scale
    splines = [RectBivariateSpline(knots_y, knots_x, c, kx=3, ky=3) for c in coarse]
    if at is not None:
        at = np.asarray(at, dtype=np.float64) / scale
        return np.stack([s(at[:, 0], at[:, 1], grid=False) for s in splines])
    yq, xq = (np.arange(h) + 0.5) / scale, (np.arange(w) + 0.5) / scale
    return np.stack([s(yq, xq) for s in splines]).astype(np.float32)


def _remove_small(lab: np.ndarray, min_area: int) -> np.ndarray:
    area = np.bincount(lab.ravel())
    small = area < min_area
    small[0] = False
    return np.where(small[lab], 0, lab).astype(lab.dtype)


def _place_seeds(
    rng: np.random.Generator, shape: tuple[int, int], n: int, r_lo: float, r_hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Place `n` centres with radii by iterated Matérn-II thinning. Returns (yx, radius)."""
    from scipy.spatial import cKDTree

    h, w = shape
    yx = np.empty((0, 2))
    rad = np.empty(0)
    spacing = _SEED_SPACING
    for _ in range(60):
        need = n - len(rad)
        if need <= 0:
            break
        m = max(4 * need, 64)
        cand = rng.uniform((0, 0), (h, w), size=(m, 2))
        crad = rng.uniform(r_lo, r_hi, size=m)
        keep = np.ones(m, dtype=bool)
        if len(rad):  # drop candidates too close to accepted centres
            tree = cKDTree(yx)
            dist, idx = tree.query(cand, k=min(8, len(rad)), distance_upper_bound=2 * spacing * r_hi)
            dist, idx = np.atleast_2d(dist.T).T, np.atleast_2d(idx.T).T
            valid = np.isfinite(dist)
            other = np.where(valid, rad[np.minimum(idx, len(rad) - 1)], 0.0)
            keep &= ~np.any(valid & (dist < spacing * (crad[:, None] + other)), axis=1)
        # Matérn II among the candidates: of two conflicting candidates, the later one goes
        pairs = cKDTree(cand).query_pairs(2 * spacing * r_hi, output_type="ndarray")
        if len(pairs):
            d = np.linalg.norm(cand[pairs[:, 0]] - cand[pairs[:, 1]], axis=1)
            pairs = pairs[d < spacing * (crad[pairs[:, 0]] + crad[pairs[:, 1]])]
            keep[pairs.max(axis=1)] = False
        kept = np.flatnonzero(keep)[:need]
        yx = np.concatenate([yx, cand[kept]])
        rad = np.concatenate([rad, crad[kept]])
        if len(kept) < max(1, need // 50):  # close to jamming: relax the spacing
            spacing *= 0.9
    if len(rad) < n:  # pathological densities: fill up without constraint
        extra = n - len(rad)
        yx = np.concatenate([yx, rng.uniform((0, 0), (h, w), size=(extra, 2))])
        rad = np.concatenate([rad, rng.uniform(r_lo, r_hi, size=extra)])
    return yx, rad


def _keep_largest_piece(lab: np.ndarray, seeds_yx: np.ndarray | None = None) -> np.ndarray:
    """Keep, per label id, the connected piece that holds its seed pixel (else the largest piece)."""
    from skimage.measure import label as cc_label

    comp = cc_label(lab, background=0, connectivity=1)
    n_comp = int(comp.max())
    if n_comp == 0:
        return lab
    flat_c, flat_l = comp.ravel(), lab.ravel()
    size = np.bincount(flat_c, minlength=n_comp + 1).astype(np.float64)
    owner = np.zeros(n_comp + 1, dtype=lab.dtype)
    owner[flat_c] = flat_l
    if seeds_yx is not None:  # give the seed's piece priority over any larger piece
        sy, sx = seeds_yx
        seed_comp = comp[sy, sx]
        seed_comp = seed_comp[seed_comp > 0]
        size[seed_comp] += lab.size
    size[0] = -1
    order = np.lexsort((-size, owner))  # per owner, biggest piece first
    first = np.ones(len(order), dtype=bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    keep = np.zeros(n_comp + 1, dtype=bool)
    keep[order[first]] = True
    keep[0] = False
    return np.where(keep[comp], lab, 0).astype(lab.dtype)


def _interior(lab: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbours all carry the same label (image edges count as the same)."""
    p = np.pad(lab, 1, mode="edge")
    c = p[1:-1, 1:-1]
    return (c == p[:-2, 1:-1]) & (c == p[2:, 1:-1]) & (c == p[1:-1, :-2]) & (c == p[1:-1, 2:])


def _relabel_consecutive(lab: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    ids = np.unique(lab)
    ids = ids[ids > 0]
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return (lut[lab], *(lut[o] for o in others), ids)


def _grow_cells(
    shape: tuple[int, int],
    yx: np.ndarray,
    r: np.ndarray,
    elong: np.ndarray,
    theta: np.ndarray,
    harm: np.ndarray,
    nuc: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic weighted Voronoi growth. Returns (cell owner 1..n, nucleus distance of the owner's nucleus)."""
    h, w = shape
    best = np.full(shape, _REACH, dtype=np.float32)  # pixels with no cell closer than _REACH stay empty
    owner = np.zeros(shape, dtype=np.int32)
    nrho = np.full(shape, np.inf, dtype=np.float32)
    a = r * np.sqrt(elong)  # semi-major axis
    b = r / np.sqrt(elong)
    amp = np.abs(harm[:, :, 0]).sum(axis=1)
    reach = np.ceil(_REACH * a * (1 + amp)) + 1
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    ncos, nsin = np.cos(nuc["theta"]), np.sin(nuc["theta"])
    n_harm = harm.shape[1]  # harmonics 2, 3, ..., n_harm + 1
    coef = (harm[:, :, 0] * np.exp(1j * harm[:, :, 1])).astype(np.complex64)
    for i in range(len(r)):
        cy, cx = yx[i]
        y0, y1 = max(0, int(cy - reach[i])), min(h, int(cy + reach[i]) + 1)
        x0, x1 = max(0, int(cx - reach[i])), min(w, int(cx + reach[i]) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        u = (dx * cos_t[i] + dy * sin_t[i]) / a[i]
        v = (-dx * sin_t[i] + dy * cos_t[i]) / b[i]
        rho = np.sqrt(u * u + v * v)
        # ragged outline: radius modulated by angular harmonics, sum_k A_k cos(k phi + psi_k) = Re(sum_k c_k z^k)
        z = (u + 1j * v) / np.maximum(rho, 1e-6)
        zk = z
        mod = np.ones_like(rho)
        for kk in range(n_harm):
            zk = zk * z
            mod += (coef[i, kk] * zk).real
        rho = rho / mod
        sub = best[y0:y1, x0:x1]
        win = rho < sub
        if not win.any():
            continue
        sub[win] = rho[win]
        owner[y0:y1, x0:x1][win] = i + 1
        # distance to this cell's own nucleus, written where this cell (currently) owns the pixel
        ndy, ndx = dy - nuc["dy"][i], dx - nuc["dx"][i]
        nu = (ndx * ncos[i] + ndy * nsin[i]) / nuc["a"][i]
        nv = (-ndx * nsin[i] + ndy * ncos[i]) / nuc["b"][i]
        nrho[y0:y1, x0:x1][win] = np.sqrt(nu * nu + nv * nv)[win]
    return owner, nrho


def _prior_from_image(image: np.ndarray, nucleus_radius: float, errors: float, rng: np.random.Generator) -> np.ndarray:
    """Nucleus-sized noisy labels from the image, as a classical nucleus segmenter would give.

    Background subtraction, a local threshold (a fixed fraction of the smoothed local maximum, and
    at least 5 robust noise deviations), and a watershed of the smoothed intensity from its local maxima
    (which splits some elongated or textured nuclei). Then, to mimic the merges and misses of a
    real nucleus prior, a fraction ``errors / 2`` of the objects is merged with its nearest
    neighbour (the convex hull of the pair, as a segmenter that sees one blob) and another
    ``errors / 2`` is dropped.
    """
    from scipy.spatial import cKDTree
    from skimage.morphology import convex_hull_image
    from skimage.segmentation import watershed

    rn = max(float(nucleus_radius), 1.5)
    img = image.astype(np.float32)
    sm = ndi.gaussian_filter(img, 1.0)
    resid = img - sm  # high-pass: pure noise on the background, which is most pixels
    noise = 1.4826 * float(np.median(np.abs(resid - np.median(resid)))) * 0.35  # noise of `sm`
    size = max(3, int(round(4 * rn)))  # box filters: cost independent of the size
    sm = sm - ndi.uniform_filter(ndi.minimum_filter(sm, size=size), size)
    top = ndi.uniform_filter(ndi.maximum_filter(sm, size=int(round(1.5 * size))), size)
    fg = (sm > _PRIOR_REL_THRESHOLD * top) & (sm > 5 * noise)
    fg = ndi.binary_fill_holes(ndi.binary_opening(fg))
    min_area = max(4, int(0.25 * np.pi * rn**2))
    comp = _remove_small(ndi.label(fg)[0].astype(np.int32), min_area)
    surf = ndi.gaussian_filter(img, 1.5)
    md = max(2, int(round(0.5 * rn)))
    peaks = (surf == ndi.maximum_filter(surf, size=2 * md + 1)) & (comp > 0)  # local maxima inside objects
    markers = ndi.label(peaks)[0].astype(np.int32)
    ws = watershed(-surf, markers, mask=comp > 0).astype(np.int32)
    ws = _relabel_consecutive(_remove_small(_keep_largest_piece(ws), min_area))[0]
    m = int(ws.max())
    if errors > 0 and m > 1:
        boxes = ndi.find_objects(ws)
        cen = np.asarray(ndi.center_of_mass(ws > 0, ws, np.arange(1, m + 1)))
        order = rng.permutation(m)
        n_err = int(round(errors / 2 * m))
        dist, nn = cKDTree(cen).query(cen, k=2)
        used = np.zeros(m, dtype=bool)
        merged = 0
        for i in order:  # merges: close neighbours only, each object in at most one merge
            if merged >= n_err:
                break
            j = nn[i, 1]
            if used[i] or used[j] or dist[i, 1] > 4 * rn:
                continue
            used[i] = used[j] = True
            merged += 1
            bi, bj = boxes[i], boxes[j]
            r0, r1 = min(bi[0].start, bj[0].start), max(bi[0].stop, bj[0].stop)
            c0, c1 = min(bi[1].start, bj[1].start), max(bi[1].stop, bj[1].stop)
            win = ws[r0:r1, c0:c1]
            hull = convex_hull_image((win == i + 1) | (win == j + 1))
            win[hull & ((win == 0) | (win == j + 1))] = i + 1
        drop = order[~used[order]][:n_err] + 1  # misses
        ws[np.isin(ws, drop)] = 0
        ws = _relabel_consecutive(_keep_largest_piece(ws))[0]
    return ws


def synthetic(
    *,
    shape: tuple[int, int] = (512, 512),
    n_cells: int | None = None,
    density: float = 0.9,
    cell_radius: float | tuple[float, float] = (8.0, 14.0),
    elongation: float | tuple[float, float] = (1.0, 2.5),
    nucleus_scale: float | tuple[float, float] = (0.4, 0.65),
    nucleus_offset: float = 0.6,
    n_genes: int = 50,
    n_cell_types: int = 5,
    transcripts_per_cell: float = 100.0,
    background_fraction: float = 0.1,
    cytoplasm_rna: float | tuple[float, float] = 1.0,
    cytoplasm_decay: float | None = None,
    profile_overlap: float = 0.0,
    weak_nuclei: float = 0.0,
    prior_errors: float = 0.1,
    image_noise: float = 0.08,
    blur: float = 1.5,
    pixel_size: float = 0.5,
    seed: int = 0,
) -> SpatialData:
    """Generate synthetic dense tissue with a nucleus stain, transcripts and ground truth.

    A seeded generator (the same arguments always give the same object) of the inputs that gsn
    segments, together with the truth they came from. The defaults are hard on purpose: cells are
    dense, touching, elongated and of varied size, with off-centre nuclei, so that expanding the
    true nuclei by any fixed radius recovers the cells clearly imperfectly.

    Parameters
    ----------
    shape
        Image size ``(height, width)`` in pixels.
    n_cells
        Number of cells to place. ``None`` derives it from ``density``. Cells that end up too small
        are dropped, so the final count (``attrs["gsn_synthetic"]["n_cells_generated"]``) can be
        a little lower.
    density
        Number of cells as a multiple of ``area / (pi * mean(r^2))``: ``1`` places as many cells as
        fit with their nominal areas. At the default ``0.9`` about 90 % of the image is covered
        by touching cells with small gaps.
    cell_radius
        Nominal cell radius in pixels (the radius of a circle of the cell's nominal area), drawn
        uniformly from this ``(low, high)`` range, or fixed if a number. Cells grow up to
        ``1.3 x`` their nominal size until they meet a neighbour.
    elongation
        Ratio of major to minor axis of each cell, drawn uniformly from ``(low, high)`` or fixed.
    nucleus_scale
        Nucleus radius as a fraction of its cell's nominal radius, ``(low, high)`` or fixed.
    nucleus_offset
        How far nuclei sit off the cell centre, as a fraction (0 to 1) of the room left inside the
        cell's nominal ellipse.
    n_genes
        Number of genes, named ``Gene000``, ``Gene001``, ...
    n_cell_types
        Number of cell types, each with its own gene profile and marker genes.
    transcripts_per_cell
        Mean number of molecules per cell; a cell's count is negative binomial with a mean
        proportional to its area.
    background_fraction
        Fraction (0 to 1) of all molecules that are background: uniform over the image, flat gene
        profile, ``true_cell_id == 0``.
    cytoplasm_rna
        Density of molecules in a cell's cytoplasm relative to the baseline (its nucleus holds
        1.5x the baseline), drawn per cell from ``(low, high)`` or fixed. Below 1: RNA-poor cytoplasm,
        whose border is harder to read from the transcripts.
    cytoplasm_decay
        If given, the cytoplasm's density also falls off as ``exp(-d / cytoplasm_decay)`` with the
        distance ``d`` (pixels) from the nucleus' edge: most molecules sit around the nucleus.
    profile_overlap
        In [0, 1): how much the cell types' gene profiles are pulled toward their mean (0: distinct
        types with strong markers; near 1: hardly distinguishable types).
    weak_nuclei
        Fraction (0 to 1) of the nuclei stained at a quarter of the usual brightness (missed or
        clipped by intensity-based priors).
    prior_errors
        Extra errors of the prior labels beyond those of segmenting the noisy image: a fraction
        ``prior_errors / 2`` of the prior nuclei is merged with a neighbour, and another
        ``prior_errors / 2`` is missed.
    image_noise
        Standard deviation of the Gaussian read noise relative to the mean nucleus intensity
        (Poisson shot noise comes on top).
    blur
        Standard deviation in pixels of the Gaussian optical blur of the nucleus image.
    pixel_size
        Microns per pixel, for the transformation to the ``"global"`` coordinate system.
    seed
        Seed of the random generator.

    Returns
    -------
    :class:`spatialdata.SpatialData` with

    - image ``"dapi"``: ``(c, y, x)`` ``uint16`` nucleus stain, channel ``"DAPI"``;
    - points ``"transcripts"``: ``x`` (column) and ``y`` (row) in image pixels (``float32``; the
      pixel of a molecule is ``(floor(y), floor(x))``), categorical ``gene``, ``int32``
      ``true_cell_id`` (0 = background);
    - labels ``"truth_labels"``: whole cells, ids ``1..n``; ``"truth_nuclei"``: the nucleus of each
      cell with its cell's id; ``"prior_labels"``: noisy nucleus labels segmented from the image;
    - ``attrs["gsn_synthetic"]``: the parameters used, the derived ``n_cells`` and the
      ``n_cells_generated``, and the true cell type of each cell (``cell_types``, index ``id - 1``).

    Every element maps to the micron coordinate system ``"global"`` by
    ``Scale([pixel_size, pixel_size], axes=("y", "x"))``.

    Examples
    --------
    >>> import gsn
    >>> sdata = gsn.datasets.synthetic(shape=(256, 256), seed=1)
    >>> sorted(sdata.labels)
    ['prior_labels', 'truth_labels', 'truth_nuclei']
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel
    from spatialdata.transformations import Scale

    h, w = (int(s) for s in shape)
    if h < 16 or w < 16:
        raise ValueError(f"`shape` must be at least (16, 16), got {shape!r}.")
    r_lo, r_hi = _as_range(cell_radius, "cell_radius")
    e_lo, e_hi = _as_range(elongation, "elongation")
    ns_lo, ns_hi = _as_range(nucleus_scale, "nucleus_scale")
    if e_lo < 1:
        raise ValueError(f"`elongation` must be >= 1, got {elongation!r}.")
    if ns_hi >= 1:
        raise ValueError(f"`nucleus_scale` must be < 1, got {nucleus_scale!r}.")
    if not 0 <= nucleus_offset <= 1:
        raise ValueError(f"`nucleus_offset` must be in [0, 1], got {nucleus_offset!r}.")
    if not 0 <= prior_errors <= 1:
        raise ValueError(f"`prior_errors` must be in [0, 1], got {prior_errors!r}.")
    c_lo, c_hi = _as_range(cytoplasm_rna, "cytoplasm_rna")
    if c_lo < 0:
        raise ValueError(f"`cytoplasm_rna` must be >= 0, got {cytoplasm_rna!r}.")
    if cytoplasm_decay is not None and not cytoplasm_decay > 0:
        raise ValueError(f"`cytoplasm_decay` must be a positive number of pixels or None, got {cytoplasm_decay!r}.")
    if not 0 <= profile_overlap < 1:
        raise ValueError(f"`profile_overlap` must be in [0, 1), got {profile_overlap!r}.")
    if not 0 <= weak_nuclei <= 1:
        raise ValueError(f"`weak_nuclei` must be in [0, 1], got {weak_nuclei!r}.")
    if not 0 <= background_fraction < 1:
        raise ValueError(f"`background_fraction` must be in [0, 1), got {background_fraction!r}.")
    if n_genes < 1 or n_cell_types < 1:
        raise ValueError("`n_genes` and `n_cell_types` must be >= 1.")
    if density <= 0 or transcripts_per_cell < 0 or image_noise < 0 or blur < 0 or pixel_size <= 0:
        raise ValueError("`density` and `pixel_size` must be > 0; noise, blur and counts must be >= 0.")

    mean_r2 = (r_hi**3 - r_lo**3) / (3 * (r_hi - r_lo)) if r_hi > r_lo else r_lo**2
    if n_cells is None:
        n_cells = max(1, int(round(density * h * w / (np.pi * mean_r2))))
    n_cells = int(n_cells)
    if n_cells < 1:
        raise ValueError(f"`n_cells` must be >= 1, got {n_cells}.")

    ss = np.random.SeedSequence(seed)
    # The 8th stream serves the harder options only, so the defaults reproduce earlier versions exactly.
    rngs = [np.random.default_rng(s) for s in ss.spawn(8)]
    rng_seed, rng_shape, rng_type, rng_img, rng_tx, rng_bg, rng_prior, rng_hard = rngs

    # 1-2. cells ---------------------------------------------------------------------------------
    yx, r = _place_seeds(rng_seed, (h, w), n_cells, r_lo, r_hi)
    n = len(r)
    elong = rng_shape.uniform(e_lo, e_hi, size=n)
    theta = rng_shape.uniform(0, np.pi, size=n)
    harm = np.stack(  # angular harmonics 2..4 of the outline: (amplitude, phase)
        [rng_shape.uniform(0, 0.12, size=(n, 3)), rng_shape.uniform(0, 2 * np.pi, size=(n, 3))], axis=-1
    )
    # 3. nuclei (geometry in the cell's frame) ---------------------------------------------------
    a, b = r * np.sqrt(elong), r / np.sqrt(elong)
    ns = rng_shape.uniform(ns_lo, ns_hi, size=n)
    n_elong = 1.0 + (elong - 1.0) * rng_shape.uniform(0.2, 0.7, size=n) + rng_shape.uniform(0, 0.3, size=n)
    n_theta = theta + rng_shape.normal(0, 0.3, size=n)
    na, nb = ns * r * np.sqrt(n_elong), ns * r / np.sqrt(n_elong)
    room_u = np.maximum(a - na, 0) * 0.8  # free room along the cell's axes (0.8: keep the nucleus clear of edges)
    room_v = np.maximum(b - nb, 0) * 0.8
    ang = rng_shape.uniform(0, 2 * np.pi, size=n)
    frac = nucleus_offset * np.sqrt(rng_shape.uniform(0.15, 1.0, size=n))
    ou, ov = frac * room_u * np.cos(ang), frac * room_v * np.sin(ang)
    nuc = {
        "dx": ou * np.cos(theta) - ov * np.sin(theta),
        "dy": ou * np.sin(theta) + ov * np.cos(theta),
        "a": na,
        "b": nb,
        "theta": n_theta,
    }
    owner, nrho = _grow_cells((h, w), yx, r, elong, theta, harm, nuc)
    seed_pix = (np.clip(yx[:, 0].astype(int), 0, h - 1), np.clip(yx[:, 1].astype(int), 0, w - 1))
    cells = _keep_largest_piece(owner, seed_pix)
    nuclei = np.where((nrho <= 1) & _interior(cells) & (cells > 0), cells, 0).astype(np.int32)
    nuclei = _keep_largest_piece(nuclei)
    cell_area = np.bincount(cells.ravel(), minlength=n + 1)
    nuc_area = np.bincount(nuclei.ravel(), minlength=n + 1)
    bad = (cell_area < _MIN_CELL_AREA) | (nuc_area < _MIN_NUCLEUS_AREA)
    bad[0] = False
    if bad.any():
        cells[bad[cells]] = 0
        nuclei[bad[nuclei]] = 0
    cells, nuclei, kept = _relabel_consecutive(cells, nuclei)
    k = len(kept)
    idx = kept - 1  # index of each final cell into the per-seed arrays

    # cell types in spatial niches: argmax of smooth fields at the centres, with some mixing
    type_fields = _smooth_field(rng_type, (h, w), scale=6 * r_hi, n=n_cell_types, at=yx[idx])
    scores = type_fields.T + rng_type.gumbel(size=(k, n_cell_types)) * 0.6
    cell_type = np.argmax(scores, axis=1) if k else np.zeros(0, dtype=int)

    # 4. image -----------------------------------------------------------------------------------
    bright = np.concatenate([[0.0], rng_img.lognormal(0.0, 0.3, size=k)]).astype(np.float32)
    weak = np.zeros(k, dtype=bool)
    if weak_nuclei > 0 and k:
        weak = rng_hard.uniform(size=k) < weak_nuclei
        bright[1:][weak] *= _WEAK_BRIGHTNESS
    texture = ndi.gaussian_filter(rng_img.standard_normal((h, w)).astype(np.float32), 1.0)
    texture /= texture.std() + 1e-12
    nr = np.where(nuclei > 0, np.minimum(nrho, 1.0), 1.0)
    signal = bright[nuclei] * (0.7 + 0.3 * (1 - nr**2)) * np.clip(1 + 0.25 * texture, 0.3, None)
    signal = np.where(nuclei > 0, signal, _CYTO_SIGNAL * (cells > 0)).astype(np.float32)
    if blur > 0:
        signal = ndi.gaussian_filter(signal, blur)
    illum = np.exp(_ILLUMINATION * _smooth_field(rng_img, (h, w), scale=max(h, w) / 3)[0])
    expected = _SIGNAL * signal * illum + _OFFSET
    counts = rng_img.poisson(expected).astype(np.float32)
    counts += rng_img.normal(0.0, image_noise * _SIGNAL, size=(h, w)).astype(np.float32)
    image = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    # 5. transcripts -----------------------------------------------------------------------------
    genes = [f"Gene{i:03d}" for i in range(n_genes)]
    base = rng_tx.dirichlet(np.full(n_genes, 0.8), size=n_cell_types)
    n_markers = max(1, n_genes // (2 * n_cell_types))
    marker_pool = rng_tx.permutation(n_genes)
    for t in range(n_cell_types):
        mk = marker_pool[(t * n_markers + np.arange(n_markers)) % n_genes]
        base[t, mk] += rng_tx.uniform(0.5, 1.5, size=n_markers) * 4.0 / n_markers
    if profile_overlap > 0:
        base = (1 - profile_overlap) * base + profile_overlap * base.mean(axis=0, keepdims=True)
    base /= base.sum(axis=1, keepdims=True)
    # per-cell profile ~ Dirichlet(200 * type profile), drawn through normalised Gamma variates
    profiles = rng_tx.gamma(base[cell_type] * 200 + 1e-3)
    profiles /= np.maximum(profiles.sum(axis=1, keepdims=True), 1e-300)

    area = np.bincount(cells.ravel(), minlength=k + 1)[1:].astype(np.float64)
    mean_count = transcripts_per_cell * area / max(area.mean(), 1.0) if k else area
    lam = rng_tx.gamma(_NB_SHAPE, mean_count / _NB_SHAPE) if k else area
    n_tx = rng_tx.poisson(lam).astype(np.int64)
    gene_counts = rng_tx.multinomial(n_tx, profiles) if k else np.zeros((0, n_genes), dtype=np.int64)
    tx_gene = np.repeat(np.tile(np.arange(n_genes), k), gene_counts.ravel())
    tx_cell = np.repeat(np.arange(1, k + 1, dtype=np.int32), n_tx)
    # positions: weighted sampling of pixels within each cell via a cumulative-weight lookup
    flat = cells.ravel()
    order = np.argsort(flat, kind="stable")
    order = order[flat[order] > 0]
    cyto = 1.0
    if (c_lo, c_hi) != (1.0, 1.0) or cytoplasm_decay is not None:
        level = np.concatenate([[0.0], rng_hard.uniform(c_lo, c_hi, size=k)])[flat[order]]
        cyto = level
        if cytoplasm_decay is not None:
            # pixels beyond the nucleus edge, from the owner's nucleus coordinate (1 = on the edge)
            nuc_r = np.sqrt(na * nb)[idx]
            beyond = np.maximum(nrho.ravel()[order] - 1.0, 0.0) * np.concatenate([[0.0], nuc_r])[flat[order]]
            cyto = level * np.exp(-beyond / cytoplasm_decay)
    wts = np.where(nuclei.ravel()[order] > 0, _NUCLEUS_BOOST, cyto)
    cum = np.cumsum(wts)
    starts = np.concatenate([[0.0], cum])[np.searchsorted(flat[order], np.arange(1, k + 1), side="left")]
    ends = cum[np.searchsorted(flat[order], np.arange(1, k + 1), side="right") - 1] if k else starts
    u = rng_tx.uniform(size=len(tx_cell))
    target = starts[tx_cell - 1] + u * (ends - starts)[tx_cell - 1]
    pix = order[np.minimum(np.searchsorted(cum, target, side="right"), len(order) - 1)]
    # background molecules
    n_bg = int(round(background_fraction / (1 - background_fraction) * len(tx_cell)))
    if background_fraction > 0 and len(tx_cell) == 0:
        n_bg = int(round(background_fraction * transcripts_per_cell * max(k, 1)))
    bg_pix = rng_bg.integers(0, h * w, size=n_bg)
    bg_gene = rng_bg.integers(0, n_genes, size=n_bg)
    all_pix = np.concatenate([pix, bg_pix])
    rows, cols = np.divmod(all_pix, w)
    jit = rng_bg.uniform(size=(len(all_pix), 2))
    x = (cols + jit[:, 0]).astype(np.float32)
    y = (rows + jit[:, 1]).astype(np.float32)
    # float32 rounding can carry col + 0.99999 to the next pixel: put such molecules at the pixel centre
    x = np.where(np.floor(x) != cols, cols.astype(np.float32) + np.float32(0.5), x)
    y = np.where(np.floor(y) != rows, rows.astype(np.float32) + np.float32(0.5), y)
    perm = rng_bg.permutation(len(all_pix))
    df = pd.DataFrame(
        {
            "x": x[perm],
            "y": y[perm],
            "gene": pd.Categorical.from_codes(np.concatenate([tx_gene, bg_gene])[perm], categories=genes),
            "true_cell_id": np.concatenate([tx_cell, np.zeros(n_bg, dtype=np.int32)])[perm].astype(np.int32),
        }
    )

    # 6. prior labels from the image -------------------------------------------------------------
    nuc_radius = float(np.sqrt(np.bincount(nuclei.ravel())[1:].mean() / np.pi)) if k else 1.0
    prior = _prior_from_image(image, nuc_radius, prior_errors, rng_prior)

    # assemble -----------------------------------------------------------------------------------
    def tf() -> dict[str, Any]:
        return {"global": Scale([pixel_size, pixel_size], axes=("y", "x"))}

    img_el = Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=tf())
    lab_kw = {"dims": ("y", "x")}
    sdata = SpatialData(
        images={"dapi": img_el},
        labels={
            "truth_labels": Labels2DModel.parse(cells.astype(np.int32), transformations=tf(), **lab_kw),
            "truth_nuclei": Labels2DModel.parse(nuclei.astype(np.int32), transformations=tf(), **lab_kw),
            "prior_labels": Labels2DModel.parse(prior.astype(np.int32), transformations=tf(), **lab_kw),
        },
        points={
            "transcripts": PointsModel.parse(
                df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations=tf()
            )
        },
    )
    sdata.attrs["gsn_synthetic"] = {
        "shape": [h, w],
        "n_cells": n_cells,
        "n_cells_generated": int(k),
        "density": float(density),
        "cell_radius": [r_lo, r_hi],
        "elongation": [e_lo, e_hi],
        "nucleus_scale": [ns_lo, ns_hi],
        "nucleus_offset": float(nucleus_offset),
        "n_genes": int(n_genes),
        "n_cell_types": int(n_cell_types),
        "transcripts_per_cell": float(transcripts_per_cell),
        "background_fraction": float(background_fraction),
        "cytoplasm_rna": [c_lo, c_hi],
        "cytoplasm_decay": None if cytoplasm_decay is None else float(cytoplasm_decay),
        "profile_overlap": float(profile_overlap),
        "weak_nuclei": float(weak_nuclei),
        "weak_nucleus_cells": [int(i) + 1 for i in np.flatnonzero(weak)],
        "prior_errors": float(prior_errors),
        "image_noise": float(image_noise),
        "blur": float(blur),
        "pixel_size": float(pixel_size),
        "seed": int(seed),
        "cell_types": [int(t) for t in cell_type],
    }
    return sdata
