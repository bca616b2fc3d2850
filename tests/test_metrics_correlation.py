"""Gene-gene correlation and its reproducibility, on tables small enough to work out by hand."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from gsn.tl._correlation import (
    correlation_of_correlations,
    correlation_reproducibility,
    gene_correlation,
)


def small_table():
    # genes:        a  b  c  neg
    x = np.array(
        [
            [1, 1, 0, 0],  # 2 genes, 2 reads
            [2, 0, 2, 0],  # 2 genes, 4 reads
            [1, 3, 0, 0],  # 2 genes, 4 reads
            [0, 5, 0, 0],  # 1 gene: dropped by min_genes=2
            [0, 1, 1, 2],  # 3 genes, 4 reads
        ]
    )
    return ad.AnnData(X=sparse.csr_matrix(x), var=pd.DataFrame(index=["a", "b", "c", "neg"]))


def test_gene_correlation_by_hand():
    adata = small_table()
    corr = gene_correlation(adata, min_genes=2, min_cell_fraction=0.3)
    # kept cells 0, 1, 2, 4; normalised: a = [1/2, 1/2, 1/4, 0], b = [1/2, 0, 3/4, 1/4],
    # c = [0, 1/2, 0, 1/4], neg = [0, 0, 0, 1/2]; neg is in 1/4 < 0.3 of the cells: dropped
    assert list(corr.index) == ["a", "b", "c"]
    a = np.array([1 / 2, 1 / 2, 1 / 4, 0])
    b = np.array([1 / 2, 0, 3 / 4, 1 / 4])
    c = np.array([0, 1 / 2, 0, 1 / 4])
    assert corr.loc["a", "b"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert corr.loc["b", "c"] == pytest.approx(np.corrcoef(b, c)[0, 1])
    assert corr.loc["a", "c"] == pytest.approx(np.corrcoef(a, c)[0, 1])
    assert np.allclose(np.diag(corr), 1.0)
    assert corr.attrs["n_cells"] == 4
    # the totals include every gene, so leaving `neg` out changes cell 4's normalisation
    no_neg = gene_correlation(adata, min_genes=2, min_cell_fraction=0.3, exclude="^neg")
    b2 = np.array([1 / 2, 0, 3 / 4, 1 / 2])
    assert no_neg.loc["a", "b"] == pytest.approx(np.corrcoef(a, b2)[0, 1])


def test_gene_correlation_cell_filter():
    corr = gene_correlation(small_table(), min_genes=3, min_cell_fraction=0.05)
    assert corr.empty and corr.attrs["n_cells"] == 1  # only cell 4 has 3 genes: no correlation


def matrix(genes, values):
    k = len(genes)
    m = np.eye(k)
    m[np.triu_indices(k, 1)] = values
    m = np.triu(m) + np.triu(m, 1).T
    return pd.DataFrame(m, index=genes, columns=genes)


def test_reproducibility_by_hand():
    a = matrix(["g1", "g2", "g3"], [0.1, 0.2, 0.3])  # pairs (1,2), (1,3), (2,3)
    b = matrix(["g1", "g2", "g3", "g4"], [0.2, 0.4, 0.0, 0.6, 0.5, 0.5])  # shared pairs: 0.2, 0.4, 0.6
    c = matrix(["g3", "g2", "g1"], [0.1, 0.2, 0.3])  # (3,2)=0.1, (3,1)=0.2, (2,1)=0.3: reversed order
    r, n_genes, n_pairs = correlation_of_correlations(a, b)
    assert (r, n_genes, n_pairs) == (pytest.approx(1.0), 3, 3)
    r_ac, _, _ = correlation_of_correlations(a, c)
    assert r_ac == pytest.approx(-1.0)  # a: (0.1, 0.2, 0.3) vs c: (0.3, 0.2, 0.1)
    assert correlation_reproducibility([a, b]) == pytest.approx(1.0)
    pairs = correlation_reproducibility({"a": a, "b": b, "c": c}, return_pairs=True)
    assert pairs["r"].round(12).tolist() == [1.0, -1.0, -1.0]
    assert correlation_reproducibility({"a": a, "b": b, "c": c}) == pytest.approx(-1.0)  # median
    same_tissue = correlation_reproducibility({"a": a, "b": b, "c": c}, tissue=["x", "x", "y"])
    assert same_tissue == pytest.approx(1.0)  # only the pair (a, b)


def test_reproducibility_groupby():
    rng = np.random.default_rng(0)
    base = rng.poisson(3, size=(200, 6))
    x = np.vstack([base, base[::-1]])  # two replicate samples with the same cells: r = 1
    adata = ad.AnnData(X=sparse.csr_matrix(x), var=pd.DataFrame(index=list("abcdef")))
    adata.obs["fov"] = pd.Categorical(["f1"] * 200 + ["f2"] * 200)
    pairs = correlation_reproducibility(adata, groupby="fov", return_pairs=True)
    assert pairs[["sample_a", "sample_b"]].iloc[0].tolist() == ["f1", "f2"]
    assert pairs["n_genes"].iloc[0] == 6 and pairs["n_pairs"].iloc[0] == 15
    assert pairs["r"].iloc[0] == pytest.approx(1.0)


def test_cosmx_two_fields_of_view():
    """The two CosMx crops (prior labels) as replicate samples, counts built from the parquet files."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    tables = []
    for name in ("cosmx_lung12_fov002", "cosmx_lung12_fov003"):
        path = data / name / "transcripts.parquet"
        if not path.exists():
            pytest.fail(f"Shared data file {path} is missing; tests read ../shared/data in place.")
        tx = pd.read_parquet(path, columns=["gene", "prior_label"])
        counts = pd.crosstab(tx.loc[tx["prior_label"] > 0, "prior_label"], tx.loc[tx["prior_label"] > 0, "gene"])
        tables.append(ad.AnnData(X=sparse.csr_matrix(counts.to_numpy()), var=pd.DataFrame(index=counts.columns)))
    pairs = correlation_reproducibility(tables, min_genes=30, return_pairs=True)  # the paper's NSCLC filter
    row = pairs.iloc[0]
    assert row["n_cells_a"] > 40 and row["n_cells_b"] > 40 and row["n_genes"] > 500
    assert -0.1 < row["r"] < 0.1  # ~55 cells per field: correlations of 700 genes are mostly noise
    strict = correlation_reproducibility(tables, min_genes=30, min_cell_fraction=0.2)
    assert strict > row["r"]  # genes seen in >= 20 % of cells agree better between the fields
