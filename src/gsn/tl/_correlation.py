"""Gene-gene correlation of a segmentation's counts and its reproducibility across replicate samples.

GeneSegNet paper, "Gene-gene correlation reproducibility" (Fig. 2j): within each sample, keep the
cells with positive expression in at least ``min_genes`` genes (5 for the hippocampus ISS data, 30 for
the CosMx NSCLC data), divide each cell's counts by its total reads, keep the genes expressed in at
least 5 % of the kept cells, and take the Pearson correlation of every pair of genes across cells.
The reproducibility of two samples is the Pearson correlation between their gene-gene correlations
over the gene pairs they share; with more than two samples of a tissue, the paper reports the
median over all pairs of samples of the same tissue.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import spatialdata as sd
from scipy import sparse

from .._logging import logger
from ._metrics import get_table

CorrelationInput = ad.AnnData | sd.SpatialData | pd.DataFrame


# --------------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------------
def gene_correlation_from_counts(
    counts,
    genes: Sequence[str],
    *,
    min_genes: int = 5,
    min_cell_fraction: float = 0.05,
) -> pd.DataFrame:
    """Pearson gene-gene correlation of library-size-normalised counts, with the paper's filters.

    Parameters
    ----------
    counts
        Cells x genes counts (dense or sparse).
    genes
        Gene names, one per column.
    min_genes
        Keep cells with positive expression in at least this many genes.
    min_cell_fraction
        Keep genes with positive expression in at least this fraction of the kept cells.

    Returns
    -------
    Square DataFrame of correlations indexed by the kept genes (in input order). ``attrs`` holds
    ``n_cells`` and ``n_genes`` after filtering. Genes with constant normalised expression get NaN.
    """
    x = sparse.csr_matrix(counts, dtype=np.float64)
    genes = pd.Index(np.asarray(genes).astype(str))
    if x.shape[1] != len(genes):
        raise ValueError(f"{len(genes)} gene names for {x.shape[1]} columns.")
    x.eliminate_zeros()
    detected = np.diff(x.indptr)
    total = np.asarray(x.sum(axis=1)).ravel()
    keep_cells = (detected >= min_genes) & (total > 0)
    x = x[keep_cells]
    n = x.shape[0]
    if n < 2:
        logger.warning("Only %d cells have at least %d detected genes; no gene-gene correlation.", n, min_genes)
        out = pd.DataFrame(np.zeros((0, 0)), index=genes[:0], columns=genes[:0])
        out.attrs.update(n_cells=n, n_genes=0)
        return out
    x = sparse.diags(1.0 / total[keep_cells]) @ x  # reads / total reads of the cell
    expressed = np.asarray((x > 0).sum(axis=0)).ravel() / n
    keep_genes = expressed >= min_cell_fraction
    x = sparse.csc_matrix(x)[:, keep_genes]
    mean = np.asarray(x.mean(axis=0)).ravel()
    cov = np.asarray((x.T @ x).todense()) / n - np.outer(mean, mean)
    sd_ = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(sd_, sd_)
    corr = np.clip(corr, -1.0, 1.0)
    valid = sd_ > 0
    np.fill_diagonal(corr, np.where(valid, 1.0, np.nan))
    kept = genes[keep_genes]
    out = pd.DataFrame(corr, index=kept, columns=kept)
    out.attrs.update(n_cells=int(n), n_genes=int(len(kept)))
    return out


def correlation_of_correlations(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, int, int]:
    """Pearson correlation between two gene-gene correlation matrices over the gene pairs they share.

    Returns
    -------
    The correlation (NaN with fewer than 3 usable pairs), the number of shared genes and of gene pairs
    used (pairs ``i < j`` where both matrices are finite).
    """
    shared = a.index.intersection(b.index, sort=False)
    k = len(shared)
    if k < 2:
        return float("nan"), k, 0
    iu = np.triu_indices(k, 1)
    va = a.loc[shared, shared].to_numpy()[iu]
    vb = b.loc[shared, shared].to_numpy()[iu]
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[ok], vb[ok]
    if len(va) < 3 or va.std() == 0 or vb.std() == 0:
        return float("nan"), k, int(len(va))
    return float(np.corrcoef(va, vb)[0, 1]), k, int(len(va))


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def _counts(adata: ad.AnnData, layer: str | None, exclude: str | Sequence[str] | None):
    counts = adata.layers[layer] if layer is not None else adata.X
    genes = adata.var_names
    if exclude is not None:
        if isinstance(exclude, str):
            pattern = re.compile(exclude)
            drop = np.array([bool(pattern.search(g)) for g in genes.astype(str)], dtype=bool)
        else:
            drop = genes.isin(list(exclude))
        counts = counts[:, ~drop]
        genes = genes[~drop]
    return counts, genes


def gene_correlation(
    data: ad.AnnData | sd.SpatialData,
    key: str | None = None,
    *,
    min_genes: int = 5,
    min_cell_fraction: float = 0.05,
    layer: str | None = None,
    exclude: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pearson gene-gene correlation of a segmentation's counts, with the GeneSegNet paper's filters.

    Cells with positive expression in fewer than ``min_genes`` genes are dropped, each cell's counts
    are divided by its total reads, genes expressed in fewer than ``min_cell_fraction`` of the kept
    cells are dropped, and the Pearson correlation of every pair of genes is taken across cells.

    Parameters
    ----------
    data
        Cells x genes AnnData of counts, or a SpatialData object with ``key``.
    key
        Prefix of the segmentation whose table ``<key>_table`` to use (SpatialData input).
    min_genes
        Minimum number of detected genes per cell (paper: 5 for ISS hippocampus, 30 for CosMx NSCLC).
    min_cell_fraction
        Minimum fraction of cells in which a gene is detected (paper: 0.05).
    layer
        Layer holding the counts instead of ``X``.
    exclude
        Genes to leave out before anything else (e.g. negative-control probes): a regular expression
        searched in the gene names, such as ``"^(NegPrb|NegControl|Blank|BLANK)"``, or a list of names.

    Returns
    -------
    Square DataFrame of correlations between the kept genes; ``.attrs`` holds ``n_cells``, ``n_genes``.
    """
    from ._metrics import _resolve_adata

    adata = _resolve_adata(data, key)
    counts, genes = _counts(adata, layer, exclude)
    return gene_correlation_from_counts(counts, genes, min_genes=min_genes, min_cell_fraction=min_cell_fraction)


def _samples(
    data, key: str | None, groupby: str | None, tissue, layer, exclude
) -> tuple[dict[str, ad.AnnData | pd.DataFrame], dict[str, object] | None]:
    """Split the input into named samples and their tissue labels (None: all pairs count)."""
    tissues: dict[str, object] | None = None
    if groupby is not None:
        if not isinstance(data, ad.AnnData | sd.SpatialData):
            raise TypeError("`groupby` needs a single AnnData or SpatialData holding all samples.")
        from ._metrics import _resolve_adata

        adata = _resolve_adata(data, key)
        if groupby not in adata.obs:
            raise KeyError(f"No column {groupby!r} in obs; columns are {list(adata.obs.columns)}.")
        groups = adata.obs[groupby]
        if isinstance(groups.dtype, pd.CategoricalDtype):
            names = list(groups.cat.categories)
        else:
            names = sorted(groups.unique())
        samples = {str(g): adata[(groups == g).to_numpy()] for g in names if (groups == g).any()}
        if isinstance(tissue, str):
            if tissue not in adata.obs:
                raise KeyError(f"No column {tissue!r} in obs for `tissue`.")
            tissues = {}
            for name, sub in samples.items():
                values = sub.obs[tissue].unique()
                if len(values) != 1:
                    raise ValueError(f"Sample {name!r} spans several tissues in {tissue!r}: {list(values)}.")
                tissues[name] = values[0]
        elif tissue is not None:
            tissues = {str(k): v for k, v in dict(tissue).items()}
        return samples, tissues
    if isinstance(data, Mapping):
        items = {str(k): v for k, v in data.items()}
    elif isinstance(data, Sequence) and not isinstance(data, str):
        items = {str(i): v for i, v in enumerate(data)}
    else:
        raise TypeError(
            "Pass several samples (a list or dict of AnnData, SpatialData or correlation DataFrames), "
            "or one table with `groupby`."
        )
    samples = {}
    for name, item in items.items():
        if isinstance(item, sd.SpatialData):
            if key is None:
                raise ValueError("Pass `key`, the prefix of the segmentation, for SpatialData samples.")
            samples[name] = get_table(item, key)
        elif isinstance(item, ad.AnnData | pd.DataFrame):
            samples[name] = item
        else:
            raise TypeError(f"Sample {name!r} is a {type(item).__name__}, not an AnnData, SpatialData or DataFrame.")
    if tissue is not None:
        if isinstance(tissue, Mapping):
            tissues = {str(k): v for k, v in tissue.items()}
        else:
            tissue = list(tissue)
            if len(tissue) != len(samples):
                raise ValueError(f"{len(tissue)} tissue labels for {len(samples)} samples.")
            tissues = dict(zip(samples, tissue, strict=True))
    return samples, tissues


def correlation_reproducibility(
    data: Sequence[CorrelationInput] | Mapping[str, CorrelationInput] | ad.AnnData | sd.SpatialData,
    key: str | None = None,
    *,
    groupby: str | None = None,
    tissue: str | Sequence | Mapping | None = None,
    min_genes: int = 5,
    min_cell_fraction: float = 0.05,
    layer: str | None = None,
    exclude: str | Sequence[str] | None = None,
    return_pairs: bool = False,
) -> float | pd.DataFrame:
    """Reproducibility of gene-gene correlations between replicate samples (GeneSegNet paper, Fig. 2j).

    For each sample, :func:`gene_correlation` with the paper's filters; for each pair of samples,
    the Pearson correlation between their gene-gene correlations over the gene pairs both kept. The
    reproducibility is the median over pairs (one pair: its correlation). With ``tissue``, only pairs
    of samples from the same tissue count, as for the paper's hippocampus replicates.

    Parameters
    ----------
    data
        The samples: a list or dict of AnnData tables, SpatialData objects (with ``key``) or
        precomputed correlation DataFrames; or one AnnData / SpatialData with ``groupby``.
    key
        Prefix of the segmentation whose tables to use (SpatialData input).
    groupby
        ``obs`` column naming the sample of each cell, when all samples are in one table.
    tissue
        Tissue of each sample: an ``obs`` column (with ``groupby``), or a list (one per sample) or
        dict (sample name -> tissue).
    min_genes, min_cell_fraction, layer, exclude
        As in :func:`gene_correlation` (paper: ``min_genes=30`` for CosMx NSCLC, 5 for ISS).
    return_pairs
        Return the per-pair table instead of the median.

    Returns
    -------
    The median correlation over pairs, or with ``return_pairs=True`` a DataFrame with one row per pair:
    ``sample_a``, ``sample_b``, ``tissue``, ``n_cells_a``, ``n_cells_b``, ``n_genes`` (shared kept genes),
    ``n_pairs`` (gene pairs) and ``r``.

    Examples
    --------
    >>> gsn.tl.correlation_reproducibility([sdata_fov2, sdata_fov3], "prior", min_genes=30)  # doctest: +SKIP
    """
    samples, tissues = _samples(data, key, groupby, tissue, layer, exclude)
    if len(samples) < 2:
        raise ValueError(f"Reproducibility needs at least two samples, got {len(samples)}.")
    corrs = {}
    for name, item in samples.items():
        if isinstance(item, pd.DataFrame):
            corrs[name] = item
        else:
            counts, genes = _counts(item, layer, exclude)
            corrs[name] = gene_correlation_from_counts(
                counts, genes, min_genes=min_genes, min_cell_fraction=min_cell_fraction
            )
    records = []
    for a, b in itertools.combinations(corrs, 2):
        if tissues is not None and tissues.get(a) != tissues.get(b):
            continue
        r, n_genes, n_pairs = correlation_of_correlations(corrs[a], corrs[b])
        records.append(
            {
                "sample_a": a,
                "sample_b": b,
                "tissue": None if tissues is None else tissues.get(a),
                "n_cells_a": corrs[a].attrs.get("n_cells", np.nan),
                "n_cells_b": corrs[b].attrs.get("n_cells", np.nan),
                "n_genes": n_genes,
                "n_pairs": n_pairs,
                "r": r,
            }
        )
    pairs = pd.DataFrame.from_records(
        records, columns=["sample_a", "sample_b", "tissue", "n_cells_a", "n_cells_b", "n_genes", "n_pairs", "r"]
    )
    if return_pairs:
        return pairs
    if pairs.empty:
        raise ValueError("No pair of samples shares a tissue; check `tissue`.")
    return float(pairs["r"].median())
