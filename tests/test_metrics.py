"""Label-free metrics on tiny hand-built cases whose answers are worked out by hand below."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from scipy import ndimage as ndi
from scipy import sparse
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, TableModel
from spatialdata.transformations import Identity, Scale

from gsn.tl._compare import compare
from gsn.tl._metrics import cell_calling, genes_per_cell, morphology, pixel_coverage, rna_coverage
from gsn.tl._metrics_core import (
    cell_calling_from_labels,
    contour_perimeter,
    convex_hull_perimeter,
    distance_to_cells,
    morphology_from_labels,
    n_genes_from_counts,
    pixel_coverage_from_labels,
    quantile_edges,
    rna_coverage_from_labels,
)

S2 = np.sqrt(2)
# the hand-built tables link to boundaries these tests do not need
pytestmark = pytest.mark.filterwarnings("ignore:The table is annotating:UserWarning")


# --------------------------------------------------------------------------------------------------
# fixtures: a SpatialData object laid out as gsn writes it, built by hand
# --------------------------------------------------------------------------------------------------
def make_sdata(image, labels: dict, tx: pd.DataFrame, *, px: float = 0.5, tables: bool = True) -> sd.SpatialData:
    """Image in pixels with Scale(px) to "global"; transcripts given in microns (Identity)."""
    scale = {"global": Scale([px, px], axes=("y", "x"))}
    images = {"dapi": Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=scale)}
    labs, tabs = {}, {}
    genes = sorted(tx["gene"].unique())
    for key, lab in labels.items():
        labs[f"{key}_labels"] = Labels2DModel.parse(lab.astype(np.int32), dims=("y", "x"), transformations=scale)
        if not tables:
            continue
        cell = lab[np.floor(tx["y"]).astype(int), np.floor(tx["x"]).astype(int)]
        ids = np.unique(lab[lab > 0])
        row = np.searchsorted(ids, cell)
        ok = cell > 0
        codes = pd.Categorical(tx["gene"], categories=genes).codes
        x = sparse.coo_matrix((np.ones(ok.sum()), (row[ok], codes[ok])), shape=(len(ids), len(genes))).tocsr()
        obs = pd.DataFrame(
            {"region": pd.Categorical([f"{key}_boundaries"] * len(ids)), "cell_id": ids},
            index=ids.astype(str),
        )
        tabs[f"{key}_table"] = TableModel.parse(
            ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes)),
            region=f"{key}_boundaries",
            region_key="region",
            instance_key="cell_id",
        )
    df = tx.copy()
    df["x"] = df["x"] * px
    df["y"] = df["y"] * px
    df["gene"] = df["gene"].astype("category")
    points = {"transcripts": PointsModel.parse(df, feature_key="gene", transformations={"global": Identity()})}
    return sd.SpatialData(images=images, labels=labs, points=points, tables=tabs)


def one_cell_case():
    """10 x 10 image, one 3 x 3 cell at rows 3-5, cols 3-5 (label 7)."""
    lab = np.zeros((10, 10), np.int32)
    lab[3:6, 3:6] = 7
    # (x, y) pixel coordinates; distance to the nearest cell pixel centre written next to each
    pts = [
        (3.2, 3.7), (4.5, 4.5), (5.9, 5.1), (3.0, 5.99),  # inside: 4
        (7.9, 3.2),  # pixel (3, 7): D = 2 (to (3, 5))
        (0.5, 0.5),  # pixel (0, 0): D = sqrt(3^2 + 3^2) = 4.24
        (9.1, 4.0),  # pixel (4, 9): D = 4
        (4.0, 9.9),  # pixel (9, 4): D = 4
        (9.5, 9.5),  # pixel (9, 9): D = sqrt(4^2 + 4^2) = 5.66
        (12.0, 4.0),  # outside the image: ignored
    ]  # fmt: skip
    x, y = np.array(pts).T
    return lab, x, y


# --------------------------------------------------------------------------------------------------
# cell calling
# --------------------------------------------------------------------------------------------------
def test_cell_calling_by_hand():
    lab, x, y = one_cell_case()
    res = cell_calling_from_labels(lab, x, y, deltas=(3, 5, 7, 1))
    # g_in = 4; g_out(3) = {2}; g_out(5) = {2, 4.24, 4, 4}; g_out(7) = all 5; g_out(1) = {}
    assert res["n_in"].tolist() == [4, 4, 4, 4]
    assert res["n_out"].tolist() == [1, 4, 5, 0]
    np.testing.assert_allclose(res["cell_calling"], [4.0, 1.0, 0.8, np.inf])


def test_cell_calling_without_cells_is_nan():
    res = cell_calling_from_labels(np.zeros((5, 5), np.int32), np.array([1.0]), np.array([1.0]))
    assert res["n_in"].eq(0).all() and res["n_out"].eq(0).all() and res["cell_calling"].isna().all()


def test_distance_matches_exact_edt():
    rng = np.random.default_rng(0)
    lab = (ndi.gaussian_filter(rng.random((120, 90)), 3) > 0.52).astype(np.int32)
    rows, cols = np.nonzero(lab == 0)
    d = distance_to_cells(lab, rows, cols, 7)
    exact = ndi.distance_transform_edt(lab == 0)[rows, cols]
    exact[exact > 7] = np.inf
    np.testing.assert_allclose(d, exact)


def test_cell_calling_sdata_uses_transformations():
    lab, x, y = one_cell_case()
    inside = x < 10
    tx = pd.DataFrame({"x": x[inside], "y": y[inside], "gene": ["a"] * int(inside.sum())})
    sdata = make_sdata(np.zeros((10, 10), np.uint8), {"seg": lab}, tx, px=0.5)
    res = cell_calling(sdata, "seg")
    assert res["cell_calling"].tolist() == [4.0, 1.0, 0.8]
    pd.testing.assert_frame_equal(res, cell_calling(sdata, "seg_labels"))


# --------------------------------------------------------------------------------------------------
# morphology
# --------------------------------------------------------------------------------------------------
def shapes_case():
    lab = np.zeros((20, 24), np.int32)
    lab[1:4, 1:5] = 1  # 3 rows x 4 cols rectangle
    lab[6:10, 1:5] = 2  # L: 4 x 4 square without its top-right 2 x 2 block
    lab[6:8, 3:5] = 0
    lab[12:15, 1:4] = 3  # 3 x 3 ring (hole in the middle)
    lab[13, 2] = 0
    lab[17, 20] = 4  # single pixel
    for i in range(3):  # diagonal line of 3 pixels
        lab[12 + i, 10 + i] = 5
    lab[1:3, 10:12] = 6  # two touching 2 x 2 squares
    lab[1:3, 12:14] = 8
    return lab


def test_morphology_by_hand():
    m = morphology_from_labels(shapes_case())
    assert m.index.tolist() == [1, 2, 3, 4, 5, 6, 8]
    assert m["area"].tolist() == [12, 12, 8, 1, 3, 4, 4]
    # outline = pixel-edge (crack) length minus (1 - sqrt(2)/2) per corner of the crack polygon
    # rectangle: 2(w-1) + 2(h-1) + 2 sqrt2; hull of the same outline is identical
    assert m.loc[1, "perimeter"] == pytest.approx(2 * 3 + 2 * 2 + 2 * S2)
    assert m.loc[1, "convex_perimeter"] == pytest.approx(2 * 3 + 2 * 2 + 2 * S2)
    assert m.loc[1, "convexity"] == pytest.approx(1.0)
    # L: crack length 16, 6 corners -> 16 - 6 + 6 sqrt2/2; hull of centres (0,0),(1,0),(3,2),(3,3),(0,3):
    # 1 + 2 sqrt2 + 1 + 3 + 3, plus 2 sqrt2 for the half-pixel diamond
    assert m.loc[2, "perimeter"] == pytest.approx(10 + 3 * S2)
    assert m.loc[2, "convex_perimeter"] == pytest.approx(8 + 4 * S2)
    assert m.loc[2, "convexity"] == pytest.approx((8 + 4 * S2) / (10 + 3 * S2))
    # ring: outer 12 + inner 4 crack length, 8 corners; hull as the full 3 x 3 square
    assert m.loc[3, "perimeter"] == pytest.approx(16 - 8 + 8 * S2 / 2)
    assert m.loc[3, "convexity"] == pytest.approx((8 + 2 * S2) / (8 + 4 * S2))
    # single pixel: a diamond of side sqrt2/2 both ways; no covariance -> elongation NaN
    assert m.loc[4, "perimeter"] == pytest.approx(2 * S2)
    assert m.loc[4, "convexity"] == pytest.approx(1.0)
    assert np.isnan(m.loc[4, "elongation"])
    # diagonal line: x == y on the boundary, covariance [[2/3, 2/3], [2/3, 2/3]] -> eigenvalues 4/3, 0
    assert m.loc[5, "elongation"] == pytest.approx(0.0, abs=1e-12)
    assert m.loc[5, "convexity"] == pytest.approx(1.0)  # three diamonds; hull 2 * 2 sqrt2 + 2 sqrt2
    # touching squares: each is its own 2 x 2 square
    for cell in (6, 8):
        assert m.loc[cell, "perimeter"] == pytest.approx(4 + 2 * S2)
        assert m.loc[cell, "elongation"] == pytest.approx(1.0)
    # rectangle elongation: boundary = 10 pixels (all but (1,1), (1,2)); var_x = 14.5/10, var_y = 8/10
    assert m.loc[1, "elongation"] == pytest.approx(0.8 / 1.45)


def test_convex_hull_matches_qhull_on_random_shapes():
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(3)
    lab = np.zeros((80, 80), np.int32)
    lab[ndi.gaussian_filter(rng.random((80, 80)), 2) > 0.51] = 1
    lab, _ = ndi.label(lab)
    hull = convex_hull_perimeter(lab)
    for cell in range(1, lab.max() + 1):
        ys, xs = np.nonzero(lab == cell)
        pts = np.stack([xs, ys], 1)
        if len(np.unique(xs)) > 1 and len(np.unique(ys)) > 1:
            expected = ConvexHull(pts).area
        else:  # a straight segment: its "perimeter" is twice its length
            expected = 2 * np.hypot(np.ptp(xs), np.ptp(ys))
        assert hull[cell] == pytest.approx(expected + 2 * S2)


def test_contour_matches_skimage_find_contours():
    from skimage.measure import find_contours

    lab = shapes_case()
    per = contour_perimeter(lab)
    for cell in (1, 2, 3):
        contours = find_contours(np.pad(lab == cell, 1).astype(float), 0.5)
        length = sum(np.hypot(*np.diff(c, axis=0).T).sum() for c in contours)
        assert per[cell] == pytest.approx(length)


def test_morphology_writes_obs():
    lab = shapes_case()
    tx = pd.DataFrame({"x": [1.5, 1.5], "y": [1.5, 7.5], "gene": ["a", "b"]})
    sdata = make_sdata(np.zeros(lab.shape, np.uint8), {"seg": lab}, tx)
    assert morphology(sdata, "seg") is None
    obs = sdata.tables["seg_table"].obs
    assert obs.loc["2", "perimeter"] == pytest.approx(10 + 3 * S2)
    assert obs.loc["1", "area"] == 12
    df = morphology(sdata, "seg", inplace=False)
    assert list(df.columns) == ["area", "perimeter", "convex_perimeter", "elongation", "convexity"]


# --------------------------------------------------------------------------------------------------
# coverage curves
# --------------------------------------------------------------------------------------------------
def test_pixel_coverage_small_by_hand():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)  # value = 4 row + col
    lab = np.zeros((4, 4), np.int32)
    lab[2, :] = 1  # values 8..11
    lab[3, :2] = 1  # values 12, 13
    lab[0, 0] = 2  # value 0
    res = pixel_coverage_from_labels(lab, image, bins=2)
    # 16 values, edge 1 = the 8th smallest (0-based) = 8: bins [0, 8) and [8, 16) (max + 1 for integers)
    assert res["lower"].tolist() == [0, 8] and res["upper"].tolist() == [8, 16]
    assert res["n_pixels"].tolist() == [8, 8]
    assert res["n_in_cells"].tolist() == [1, 6]
    np.testing.assert_allclose(res["fraction"], [1 / 8, 6 / 8])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pixel_coverage_quantile_bins(dtype):
    # 64 x 128, value = column (uint8 takes the histogram path, float the partition path)
    image = np.tile(np.arange(128), (64, 1)).astype(dtype)
    lab = np.zeros(image.shape, np.int32)
    lab[:, 16:48] = 1
    res = pixel_coverage_from_labels(lab, image, bins=4)
    # each column holds 64 pixels; quartile edges at sorted positions 2048, 4096, 6144 -> 32, 64, 96
    assert res["lower"].tolist() == [0, 32, 64, 96]
    assert res["n_pixels"].tolist() == [2048] * 4
    np.testing.assert_allclose(res["fraction"], [0.5, 0.5, 0, 0])
    explicit = pixel_coverage_from_labels(lab, image, bins=[0, 16, 128])
    assert explicit["n_pixels"].tolist() == [1024, 7168]
    np.testing.assert_allclose(explicit["fraction"], [0, 2048 / 7168])


def test_quantile_edges_merge_ties():
    values = np.r_[np.zeros(90, np.int64), np.arange(1, 11)]
    edges = quantile_edges(values, 10)  # the inner deciles sit at sorted positions 10, ..., 90: 0 (x 8) and 1
    assert edges.tolist() == [0, 1, 11]
    binary = quantile_edges(np.r_[np.zeros(30, bool), np.ones(70, bool)], 4)
    assert binary.tolist() == [0, 1, 2]  # a bin [1, 2) keeps the top level apart
    assert quantile_edges(np.array([0.5, 0.25]), 1)[-1] == np.nextafter(0.5, 1)


def test_rna_coverage_by_hand():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    lab = np.zeros((4, 4), np.int32)
    lab[3, 0:2] = 1  # values 12, 13
    lab[0, 1] = 2  # value 1
    # transcripts on values 0, 1, 2, 12, 13, 14
    x = np.array([0.5, 1.5, 2.5, 0.5, 1.5, 2.5])
    y = np.array([0.5, 0.5, 0.5, 3.5, 3.5, 3.5])
    res = rna_coverage_from_labels(lab, image, x, y, bins=2)
    # 6 values; edge = the 3rd smallest (0-based) = 12 -> [0, 12) holds 0, 1, 2; [12, 15) holds 12, 13, 14
    assert res["lower"].tolist() == [0, 12]
    assert res["n_transcripts"].tolist() == [3, 3]
    assert res["n_in_cells"].tolist() == [1, 2]


def test_coverage_sdata_wrappers():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    lab = np.zeros((4, 4), np.int32)
    lab[3, 0:2] = 1
    lab[0, 1] = 2
    tx = pd.DataFrame({"x": [0.5, 1.5, 2.5, 0.5, 1.5, 2.5], "y": [0.5] * 3 + [3.5] * 3, "gene": list("aabbcc")})
    sdata = make_sdata(image, {"seg": lab}, tx)
    assert rna_coverage(sdata, "seg", bins=2)["n_in_cells"].tolist() == [1, 2]
    px = pixel_coverage(sdata, "seg", bins=2)
    assert px["n_in_cells"].tolist() == [1, 2]  # [0, 8): value 1; [8, 16): 12, 13


# --------------------------------------------------------------------------------------------------
# genes per cell
# --------------------------------------------------------------------------------------------------
def test_genes_per_cell_by_hand():
    x = sparse.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [3, 1, 1, 1]]))
    x.data[0] = 0  # an explicitly stored zero is not a detected gene
    assert n_genes_from_counts(x).tolist() == [1, 0, 4]
    adata = ad.AnnData(X=x)
    hist = genes_per_cell(adata)
    assert hist["n_genes"].tolist() == [0, 1, 2, 3, 4]
    assert hist["n_cells"].tolist() == [1, 1, 0, 0, 1]
    assert adata.obs["n_genes"].tolist() == [1, 0, 4]
    binned = genes_per_cell(adata, bins=[0, 2, 5], key_added=None)
    assert binned["n_cells"].tolist() == [2, 1]


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------
def test_compare_tidy_table():
    lab, x, y = one_cell_case()
    inside = x < 10
    tx = pd.DataFrame({"x": x[inside], "y": y[inside], "gene": list("abcabcabc")})
    big = np.zeros_like(lab)
    big[2:8, 2:8] = 1  # 6 x 6 cell around the 3 x 3 one
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    sdata = make_sdata(image, {"small": lab, "big": big}, tx, px=0.5)
    table = compare(sdata, ["small", "big"], bins=2)
    assert list(table.columns) == ["key", "metric", "stat", "level", "lower", "upper", "value"]

    def get(key, metric, stat, level=None):
        rows = table[(table["key"] == key) & (table["metric"] == metric) & (table["stat"] == stat)]
        if level is not None:
            rows = rows[rows["level"] == level]
        assert len(rows) == 1
        return rows["value"].iloc[0]

    assert get("small", "cell_calling", "ratio", 3) == 4.0
    assert get("small", "n_cells", "value") == 1
    assert get("small", "area", "median") == 9
    assert get("big", "area", "median") == 36
    assert get("small", "transcripts_in_cells", "fraction") == pytest.approx(4 / 9)
    assert get("small", "pixels_in_cells", "fraction") == pytest.approx(9 / 100)
    assert get("small", "n_transcripts", "mean") == 4
    assert get("small", "n_genes", "mean") == 3  # a, b, c, a
    # the big cell also takes the molecule at pixel (3, 7): 5 in
    assert get("big", "cell_calling", "n_in", 3) == 5
    # the same bins for both segmentations
    small_bins = table[(table["key"] == "small") & (table["metric"] == "pixel_coverage")][["lower", "upper"]]
    big_bins = table[(table["key"] == "big") & (table["metric"] == "pixel_coverage")][["lower", "upper"]]
    np.testing.assert_array_equal(small_bins.to_numpy(), big_bins.to_numpy())
    per_cell = compare(sdata, ["small"], per_cell=True)
    cells = per_cell[(per_cell["metric"] == "area") & (per_cell["stat"] == "cell")]
    assert cells["level"].tolist() == [7] and cells["value"].tolist() == [9]


def test_compare_without_tables_counts_from_transcripts():
    lab, x, y = one_cell_case()
    inside = x < 10
    tx = pd.DataFrame({"x": x[inside], "y": y[inside], "gene": list("abcabcabc")})
    sdata = make_sdata(np.zeros((10, 10), np.uint8), {"small": lab}, tx, tables=False)
    table = compare(sdata, ["small"])
    sel = table[(table["metric"] == "n_genes") & (table["stat"] == "mean")]
    assert sel["value"].iloc[0] == 3
