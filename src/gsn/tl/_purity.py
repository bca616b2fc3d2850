"""Purity of a segmentation: mutually exclusive co-expression rate (MECR) of marker genes.

Transcripts in cells alone rewards blobs: a segmentation that swallows its neighbours puts every
molecule in a cell. MECR says how often a cell holds markers of two different cell types, which a
pure cell should not: for a pair of markers (a, b) of different types, cells expressing both over
cells expressing either, averaged over pairs; lower is purer. A segmentation is better than nuclei
expansion when it puts more transcripts in cells at a lower MECR than expansion's curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import spatialdata as sd
from scipy import sparse

from .._logging import logger

# Markers: genes detected in at least this fraction of their type's cells, ranked by detection in the
# type minus detection elsewhere.
_MIN_DETECTION = 0.2
_MIN_CELL_TRANSCRIPTS = 10


def marker_genes_from_counts(
    counts, genes: Sequence[str], *, n_per_type: int = 3, seed: int = 0
) -> dict[str, list[str]]:
    """Marker genes per data-derived cell type from a cells x genes counts matrix.

    Cells with at least 10 transcripts are clustered by expression (:func:`gsn.models.grow_labels`'s
    clustering: PCA, k-means, number of types by silhouette); each gene is a candidate marker of the
    type where its detection rate most exceeds the rate in the other cells.
    """
    from ..models._growth import cell_types

    counts = sparse.csr_matrix(counts)
    genes = np.asarray([str(g) for g in genes])
    totals = np.asarray(counts.sum(axis=1)).ravel()
    keep = totals >= _MIN_CELL_TRANSCRIPTS
    dense = counts[keep].toarray().astype(np.float64)
    if dense.shape[0] < 6:
        raise ValueError(
            f"Only {dense.shape[0]} cells have at least {_MIN_CELL_TRANSCRIPTS} transcripts: too few to derive "
            "marker genes. Pass `markers=` (a dict of cell type -> genes)."
        )
    types = cell_types(dense, seed)
    n_types = int(types.max()) + 1
    if n_types < 2:
        raise ValueError("The cells form a single expression cluster; pass `markers=` to compute MECR.")
    detected = dense > 0
    frac = np.stack([detected[types == t].mean(axis=0) for t in range(n_types)])
    rest = np.stack([detected[types != t].mean(axis=0) for t in range(n_types)])
    score = np.where(frac >= _MIN_DETECTION, frac - rest, -np.inf)
    owner = np.argmax(score, axis=0)
    markers: dict[str, list[str]] = {}
    for t in range(n_types):
        mine = np.flatnonzero((owner == t) & np.isfinite(score[t]) & (score[t] > 0))
        top = mine[np.argsort(-score[t, mine], kind="stable")][:n_per_type]
        if len(top):
            markers[f"type{t}"] = genes[top].tolist()
    return markers


def mecr_from_counts(counts, genes: Sequence[str], markers: Mapping[str, Sequence[str]]) -> float:
    """Mean over marker pairs of different types of (cells expressing both) / (cells expressing either)."""
    index = {str(g): i for i, g in enumerate(genes)}
    groups = {t: [index[g] for g in gs if g in index] for t, gs in markers.items()}
    missing = sorted({g for gs in markers.values() for g in gs if g not in index})
    if missing:
        logger.warning("MECR: %d marker gene(s) not in the data are ignored: %s", len(missing), missing[:10])
    pairs = [(a, b) for t1, t2 in combinations(groups, 2) for a in groups[t1] for b in groups[t2] if a != b]
    if not pairs:
        raise ValueError("MECR needs marker genes of at least two cell types that are present in the data.")
    used = sorted({g for p in pairs for g in p})
    col = {g: i for i, g in enumerate(used)}
    expressed = (sparse.csr_matrix(counts)[:, used] > 0).astype(np.float64)
    both = (expressed.T @ expressed).toarray()  # cells expressing both genes of each pair
    single = np.diag(both)
    rates = []
    for a, b in pairs:
        i, j = col[a], col[b]
        either = single[i] + single[j] - both[i, j]
        if either > 0:
            rates.append(both[i, j] / either)
    return float(np.mean(rates)) if rates else float("nan")


def _table_counts(sdata: sd.SpatialData, key: str):
    """Return the counts and gene names of segmentation ``key``'s table, or ``None`` without a table."""
    from ._metrics import get_table

    try:
        table = get_table(sdata, key)
    except KeyError:
        return None
    return table.X, list(table.var_names)


def _cell_counts(sdata: sd.SpatialData, key: str, points_key: str | None):
    """Return the counts and gene names of segmentation ``key``: its table, else the transcripts under its labels."""
    from_table = _table_counts(sdata, key)
    if from_table is not None:
        return from_table
    genes, [(counts, _, _)] = _label_cells(sdata, key, points_key)
    return counts, genes


class _Expanded:
    """Labels read by window and expanded by ``distance`` pixels (``skimage.segmentation.expand_labels``)."""

    def __init__(self, source, distance: float):
        self.source, self.distance, self.shape = source, distance, source.shape
        self.halo = int(np.ceil(distance)) + 1

    def read(self, window):
        from skimage.segmentation import expand_labels

        if self.distance <= 0:
            return self.source.read(window)
        outer = window.grow(self.halo, self.shape)
        return expand_labels(self.source.read(outer), distance=self.distance)[window.within(outer)]


def _label_cells(sdata: sd.SpatialData, key: str, points_key: str | None, distances_px: Sequence[float] = (0.0,)):
    """Return the gene names and, per distance, the labels' counts, cells and fraction of transcripts in cells.

    For each of ``distances_px``, the labels expanded by that distance are read block by block
    (:func:`gsn.tl._cells_pass.cells_pass`): ``(counts, n_cells, fraction)`` with ``counts`` cells x
    genes; the transcripts are indexed once.
    """
    from ..blockwise import BLOCK_SIZE
    from ._cells import transcript_index
    from ._cells_pass import cells_pass
    from ._metrics import labels_source

    name, element, source = labels_source(sdata, key)
    index = transcript_index(sdata, points_key, element, name)
    genes = list(index.genes)
    out = []
    for distance in distances_px:
        cells = cells_pass(_Expanded(source, distance), index=index, n_genes=len(genes), block_size=BLOCK_SIZE,
                           halo=0, polygons=False, progress=False)  # fmt: skip
        n_in = int(np.count_nonzero(cells.transcript_cells))
        fraction = n_in / index.n_inside if index.n_inside else np.nan
        out.append((cells.counts, len(cells.stats), fraction))
    return genes, out


def marker_genes(
    sdata: sd.SpatialData, key: str, *, points_key: str | None = None, n_per_type: int = 3, seed: int = 0
) -> dict[str, list[str]]:
    """Marker genes of data-derived cell types, from the cells of segmentation ``key``.

    Use one marker set for every segmentation you compare (derive it from a reference such as the
    nuclei, or pass known lineage markers), so their MECR values are comparable.

    Parameters
    ----------
    sdata
        SpatialData object.
    key
        Segmentation prefix (``<key>_table``), a table name, or a labels element.
    points_key
        Transcripts, when ``key`` has no table.
    n_per_type
        Markers kept per cell type.
    seed
        Seed of the clustering.

    Returns
    -------
    ``{type name: [genes]}``.
    """
    counts, genes = _cell_counts(sdata, key, points_key)
    return marker_genes_from_counts(counts, genes, n_per_type=n_per_type, seed=seed)


def mecr(
    sdata: sd.SpatialData,
    key: str,
    markers: Mapping[str, Sequence[str]] | None = None,
    *,
    points_key: str | None = None,
    seed: int = 0,
) -> float:
    """Mutually exclusive co-expression rate of marker genes in the cells of a segmentation (lower: purer).

    For each pair of marker genes ``(a, b)`` of two different cell types: the number of cells that
    express both over the number that express either; the mean over pairs.

    Parameters
    ----------
    sdata
        SpatialData object.
    key
        Segmentation prefix (``<key>_table``), a table name, or a labels element.
    markers
        ``{cell type: [genes]}``. ``None`` derives them from this segmentation's own cells with
        :func:`marker_genes` (then values of different segmentations are not comparable: derive one
        set and pass it to each).
    points_key
        Transcripts, when ``key`` has no table.
    seed
        Seed of the clustering when markers are derived.

    Returns
    -------
    MECR in [0, 1].
    """
    counts, genes = _cell_counts(sdata, key, points_key)
    if markers is None:
        markers = marker_genes_from_counts(counts, genes, seed=seed)
    return mecr_from_counts(counts, genes, markers)


def expansion_curve(
    sdata: sd.SpatialData,
    labels_key: str,
    markers: Mapping[str, Sequence[str]],
    *,
    distances: Sequence[float] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15),
    points_key: str | None = None,
    pixel_size: float | None = None,
) -> pd.DataFrame:
    """Transcripts in cells and MECR of nuclei expanded by fixed distances (the reference curve).

    Parameters
    ----------
    sdata
        SpatialData object.
    labels_key
        Nucleus labels to expand (``skimage.segmentation.expand_labels``).
    markers
        ``{cell type: [genes]}`` (see :func:`marker_genes`).
    distances
        Expansion distances in microns (pixels when the pixel size is unknown).
    points_key
        Transcripts element.
    pixel_size
        Microns per pixel, overriding the labels' transformation.

    Returns
    -------
    DataFrame with ``distance``, ``n_cells``, ``transcripts_in_cells`` and ``mecr``, one row a distance.
    """
    from .._elements import label_source
    from ._metrics import labels_name
    from ._segment import image_pixel_size

    _, element, _ = label_source(sdata, labels_name(sdata, labels_key))
    px = pixel_size if pixel_size is not None else image_pixel_size(element)
    px = 1.0 if px is None else px
    genes, expanded = _label_cells(sdata, labels_key, points_key, [float(d) / px if d > 0 else 0.0 for d in distances])
    rows = [
        {"distance": float(dist), "n_cells": int(n), "transcripts_in_cells": float(frac),
         "mecr": mecr_from_counts(c, genes, markers)}
        for dist, (c, n, frac) in zip(distances, expanded, strict=True)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def purity(
    sdata: sd.SpatialData,
    keys: str | Sequence[str],
    markers: Mapping[str, Sequence[str]],
    *,
    reference: pd.DataFrame | None = None,
    points_key: str | None = None,
) -> pd.DataFrame:
    """Transcripts in cells against MECR for several segmentations, and where each lies against a reference curve.

    "Better than nuclei expansion" on real data means more transcripts in cells at a lower MECR
    than expansion reaches at the same fraction (:func:`expansion_curve`).

    Parameters
    ----------
    sdata
        SpatialData object.
    keys
        Segmentation prefixes (or labels elements).
    markers
        ``{cell type: [genes]}``, one set for every segmentation (see :func:`marker_genes`).
    reference
        The output of :func:`expansion_curve`; adds the curve's MECR at each row's fraction in cells
        (linear interpolation) and whether the row lies below it.
    points_key
        Transcripts element.

    Returns
    -------
    DataFrame with ``key``, ``n_cells``, ``transcripts_in_cells``, ``mecr`` and, with ``reference``,
    ``reference_mecr`` and ``below_reference``.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    rows = []
    for key in keys:
        # One pass over the labels gives the cells, the fraction and (without a table) the counts.
        genes, [(counts, n_cells, fraction)] = _label_cells(sdata, key, points_key)
        counts, genes = _table_counts(sdata, key) or (counts, genes)
        rows.append(
            {
                "key": key,
                "n_cells": int(n_cells),
                "transcripts_in_cells": float(fraction),
                "mecr": mecr_from_counts(counts, genes, markers or marker_genes_from_counts(counts, genes)),
            }
        )
    table = pd.DataFrame(rows)
    if reference is not None:
        ref = reference.sort_values("transcripts_in_cells")
        table["reference_mecr"] = np.interp(table["transcripts_in_cells"], ref["transcripts_in_cells"], ref["mecr"])
        table["below_reference"] = table["mecr"] < table["reference_mecr"]
    return table
