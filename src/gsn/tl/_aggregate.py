"""Cells x genes counts and per-cell geometry from a label image and transcript assignments."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from spatialdata.models import TableModel

from .._constants import AREA_KEY, AREA_UM2_KEY, INSTANCE_KEY, REGION_KEY, SPATIAL_KEY, SPATIAL_PX_KEY


def label_stats(labels: np.ndarray) -> pd.DataFrame:
    """Area (pixels) and centroid (x, y in spatialdata pixel coordinates) of every label, indexed by id."""
    labels = np.asarray(labels)
    flat = labels.ravel()
    fg = flat > 0
    ids, inverse, area = np.unique(flat[fg], return_inverse=True, return_counts=True)
    h, w = labels.shape
    pos = np.flatnonzero(fg)
    rows, cols = np.divmod(pos, w)
    cy = np.bincount(inverse, weights=rows, minlength=len(ids)) / np.maximum(area, 1) + 0.5
    cx = np.bincount(inverse, weights=cols, minlength=len(ids)) / np.maximum(area, 1) + 0.5
    return pd.DataFrame({"area": area.astype(np.int64), "centroid_x": cx, "centroid_y": cy}, index=ids.astype(np.int64))


def count_matrix(cell_ids: np.ndarray, gene_codes: np.ndarray, cells: np.ndarray, n_genes: int) -> sparse.csr_matrix:
    """Sparse cells x genes counts: transcripts with ``cell_ids`` in ``cells`` (sorted) counted per gene."""
    cells = np.asarray(cells)
    row = np.searchsorted(cells, cell_ids)
    ok = (cell_ids > 0) & (gene_codes >= 0) & (row < len(cells))
    ok[ok] &= cells[row[ok]] == cell_ids[ok]
    data = np.ones(int(ok.sum()), dtype=np.int32)
    m = sparse.coo_matrix((data, (row[ok], gene_codes[ok])), shape=(len(cells), n_genes))
    return m.tocsr()


def global_affine(element) -> np.ndarray:
    """Affine (3 x 3, x and y) from an element's pixels to ``"global"`` (or its only coordinate system)."""
    from spatialdata.transformations import get_transformation

    transformations = get_transformation(element, get_all=True) or {}
    if not transformations:
        return np.eye(3)
    cs = "global" if "global" in transformations else next(iter(transformations))
    return transformations[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def build_table(
    stats: pd.DataFrame,
    counts: sparse.csr_matrix,
    genes: pd.Index,
    *,
    region: str,
    uns: dict | None = None,
    affine: np.ndarray | None = None,
    pixel_size: float | None = None,
) -> ad.AnnData:
    """AnnData in the layout of DESIGN.md, annotating the labels element ``region``.

    ``obsm["spatial"]`` holds the centroids mapped by ``affine`` (pixels to the ``"global"``
    coordinate system, see :func:`global_affine`; identity: pixels), ``obsm["spatial_px"]`` the
    pixel centroids. ``obs["area_um2"]`` is added when ``pixel_size`` (units per pixel) is known.
    """
    ids = stats.index.to_numpy()
    columns = {
        REGION_KEY: pd.Categorical([region] * len(ids), categories=[region]),
        INSTANCE_KEY: ids.astype(np.int64),
        AREA_KEY: stats["area"].to_numpy(),
    }
    if pixel_size is not None:
        columns[AREA_UM2_KEY] = stats["area"].to_numpy(dtype=np.float64) * pixel_size**2
    columns["n_transcripts"] = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
    columns["n_genes"] = np.diff(counts.indptr).astype(np.int64)
    obs = pd.DataFrame(columns, index=pd.Index(ids.astype(str), name=None))
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes.astype(str))))
    px = stats[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64)
    affine = np.eye(3) if affine is None else np.asarray(affine, dtype=np.float64)
    adata.obsm[SPATIAL_KEY] = px @ affine[:2, :2].T + affine[:2, 2]
    adata.obsm[SPATIAL_PX_KEY] = px
    if uns:
        adata.uns.update(uns)
    if adata.n_obs == 0:
        # spatialdata rejects a table linked to a region that none of its rows mentions; an empty
        # segmentation keeps an unlinked empty table with the same columns.
        return TableModel.parse(adata)
    return TableModel.parse(adata, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
