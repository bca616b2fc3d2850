"""Tests of :func:`gsn.datasets.synthetic`, the synthetic tissue with ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from skimage.segmentation import expand_labels
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, get_model
from spatialdata.transformations import Scale, get_transformation

import gsn

SMALL = {"shape": (160, 192), "seed": 3}
LABELS = ("truth_labels", "truth_nuclei", "prior_labels")


def _mean_best_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over truth objects of the best IoU with any predicted object (0 when unmatched)."""
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    nt, npred = int(t.max()) + 1, int(p.max()) + 1
    cont = sp.coo_matrix((np.ones(t.size), (t, p)), shape=(nt, npred)).tocsr().tocoo()
    area_t, area_p = np.bincount(t, minlength=nt), np.bincount(p, minlength=npred)
    keep = (cont.row > 0) & (cont.col > 0)
    r, c, inter = cont.row[keep], cont.col[keep], cont.data[keep]
    iou = inter / (area_t[r] + area_p[c] - inter)
    best = np.zeros(nt)
    np.maximum.at(best, r, iou)
    return float(best[1:].mean())


def _arrays(sdata) -> dict[str, np.ndarray]:
    out = {"dapi": sdata["dapi"].values}
    out.update({k: sdata[k].values for k in LABELS})
    return out


@pytest.fixture(scope="module")
def small():
    return gsn.datasets.synthetic(**SMALL)


@pytest.fixture(scope="module")
def default():
    return gsn.datasets.synthetic()


def test_elements_and_models(small):
    assert set(small.images) == {"dapi"}
    assert set(small.points) == {"transcripts"}
    assert set(small.labels) == set(LABELS)
    img = small["dapi"]
    assert get_model(img) is Image2DModel
    assert img.dims == ("c", "y", "x")
    assert list(img.coords["c"].values) == ["DAPI"]
    assert img.dtype == np.uint16
    assert img.shape == (1, *SMALL["shape"])
    for k in LABELS:
        assert get_model(small[k]) is Labels2DModel
        assert small[k].dtype == np.int32
        assert small[k].shape == SMALL["shape"]
    pts = small["transcripts"]
    assert get_model(pts) is PointsModel
    assert pts.attrs["spatialdata_attrs"]["feature_key"] == "gene"
    df = pts.compute()
    assert df["x"].dtype == np.float32 and df["y"].dtype == np.float32
    assert df["true_cell_id"].dtype == np.int32
    assert isinstance(df["gene"].dtype, pd.CategoricalDtype)
    for name in ("dapi", "transcripts", *LABELS):
        tf = get_transformation(small[name], get_all=True)
        assert set(tf) == {"global"}
        assert isinstance(tf["global"], Scale)
        assert tf["global"].axes == ("y", "x")
        np.testing.assert_allclose(tf["global"].scale, [0.5, 0.5])


def test_deterministic(small):
    again = gsn.datasets.synthetic(**SMALL)
    a, b = _arrays(small), _arrays(again)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    pd.testing.assert_frame_equal(small["transcripts"].compute(), again["transcripts"].compute())
    assert small.attrs["gsn_synthetic"] == again.attrs["gsn_synthetic"]

    other = gsn.datasets.synthetic(**{**SMALL, "seed": SMALL["seed"] + 1})
    c = _arrays(other)
    for k in a:
        assert not np.array_equal(a[k], c[k]), k


def test_ids_consistent(small):
    cells, nuclei = small["truth_labels"].values, small["truth_nuclei"].values
    ids = np.unique(cells[cells > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive 1..n
    assert len(ids) == small.attrs["gsn_synthetic"]["n_cells_generated"] > 10
    # every cell has exactly its own nucleus, and the nucleus lies inside its cell
    np.testing.assert_array_equal(np.unique(nuclei[nuclei > 0]), ids)
    np.testing.assert_array_equal(cells[nuclei > 0], nuclei[nuclei > 0])
    # nuclei are smaller than their cells: cytoplasm everywhere
    assert np.all(np.bincount(nuclei.ravel())[1:] < np.bincount(cells.ravel())[1:])
    assert len(small.attrs["gsn_synthetic"]["cell_types"]) == len(ids)


def test_transcripts_match_truth(small):
    cells = small["truth_labels"].values
    h, w = cells.shape
    df = small["transcripts"].compute()
    x, y, cid = df["x"].to_numpy(), df["y"].to_numpy(), df["true_cell_id"].to_numpy()
    assert x.min() >= 0 and y.min() >= 0 and x.max() < w and y.max() < h
    row, col = np.floor(y).astype(int), np.floor(x).astype(int)
    fg = cid > 0
    np.testing.assert_array_equal(cells[row[fg], col[fg]], cid[fg])
    assert abs((~fg).mean() - 0.1) < 0.01
    # every cell gets molecules, and molecules also fall in the cytoplasm (outside the nucleus)
    assert set(np.unique(cid[fg])) == set(range(1, int(cells.max()) + 1))
    nuclei = small["truth_nuclei"].values
    assert (nuclei[row[fg], col[fg]] == 0).mean() > 0.4


def test_parameters_respected():
    sdata = gsn.datasets.synthetic(
        shape=(96, 160),
        n_genes=7,
        n_cell_types=2,
        transcripts_per_cell=40,
        background_fraction=0.25,
        pixel_size=0.25,
        n_cells=20,
        seed=5,
    )
    assert sdata["dapi"].shape == (1, 96, 160)
    df = sdata["transcripts"].compute()
    assert list(df["gene"].cat.categories) == [f"Gene{i:03d}" for i in range(7)]
    assert abs((df["true_cell_id"] == 0).mean() - 0.25) < 0.03
    n = int(sdata["truth_labels"].values.max())
    assert 15 <= n <= 20
    assert 20 < (df["true_cell_id"] > 0).sum() / n < 80
    np.testing.assert_allclose(get_transformation(sdata["truth_labels"]).scale, [0.25, 0.25])
    attrs = sdata.attrs["gsn_synthetic"]
    assert attrs["shape"] == [96, 160] and attrs["n_genes"] == 7 and attrs["n_cells"] == 20
    assert attrs["pixel_size"] == 0.25 and attrs["seed"] == 5
    assert set(attrs["cell_types"]) <= {0, 1}


def test_cell_types_have_distinct_profiles(default):
    df = default["transcripts"].compute()
    df = df[df["true_cell_id"] > 0]
    types = np.asarray(default.attrs["gsn_synthetic"]["cell_types"])
    counts = pd.crosstab(types[df["true_cell_id"].to_numpy() - 1], df["gene"].cat.codes.to_numpy())
    prof = counts.to_numpy() / counts.to_numpy().sum(axis=1, keepdims=True)
    assert len(prof) == 5
    corr = np.corrcoef(prof)[np.triu_indices(len(prof), 1)]
    assert corr.max() < 0.9  # types are distinguishable from their genes


def test_image_shows_nuclei(default):
    img = default["dapi"].values[0].astype(float)
    cells, nuclei = default["truth_labels"].values, default["truth_nuclei"].values
    inside, cyto, outside = img[nuclei > 0].mean(), img[(cells > 0) & (nuclei == 0)].mean(), img[cells == 0].mean()
    assert inside > 2.5 * cyto and cyto > outside  # nuclei bright; blur and autofluorescence in the cytoplasm


def test_zarr_roundtrip(small, tmp_path):
    import spatialdata as sd

    path = tmp_path / "synthetic.zarr"
    small.write(path)
    back = sd.read_zarr(path)
    a, b = _arrays(small), _arrays(back)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    pd.testing.assert_frame_equal(
        small["transcripts"].compute().reset_index(drop=True),
        back["transcripts"].compute().reset_index(drop=True),
        check_categorical=False,
    )
    assert back.attrs["gsn_synthetic"] == small.attrs["gsn_synthetic"]
    for name in ("dapi", "transcripts", *LABELS):
        affine = get_transformation(back[name]).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
        np.testing.assert_allclose(affine, np.diag([0.5, 0.5, 1.0]), err_msg=name)


def test_nuclei_expansion_is_imperfect(default):
    cells, nuclei = default["truth_labels"].values, default["truth_nuclei"].values
    scores = {r: _mean_best_iou(cells, expand_labels(nuclei, r)) for r in (2, 4, 6, 8, 10, 12)}
    best = max(scores.values())
    assert 0.4 < best < 0.9, scores


def test_prior_labels_are_imperfect(default):
    cells, nuclei = default["truth_labels"].values, default["truth_nuclei"].values
    prior = default["prior_labels"].values
    n_true, n_prior = int(nuclei.max()), len(np.unique(prior[prior > 0]))
    assert np.array_equal(np.unique(prior[prior > 0]), np.arange(1, n_prior + 1))
    assert 0.7 * n_true < n_prior < n_true  # misses and merges outnumber splits
    iou_nuclei = _mean_best_iou(nuclei, prior)
    assert 0.5 < iou_nuclei < 0.9  # nucleus-sized, but imperfect
    assert _mean_best_iou(cells, prior) < 0.5  # not whole cells
    # without the extra errors the image-derived prior is better, but still imperfect
    clean = gsn.datasets.synthetic(prior_errors=0.0)["prior_labels"].values
    assert iou_nuclei < _mean_best_iou(nuclei, clean) < 0.9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (8, 8)},
        {"elongation": 0.5},
        {"cell_radius": (10, 5)},
        {"background_fraction": 1.0},
        {"nucleus_scale": 1.2},
        {"prior_errors": -0.1},
        {"n_genes": 0},
        {"density": 0},
        {"cytoplasm_rna": -0.5},
        {"cytoplasm_decay": 0},
        {"profile_overlap": 1.0},
        {"weak_nuclei": 1.5},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        gsn.datasets.synthetic(**kwargs)


def test_edge_cases():
    one = gsn.datasets.synthetic(shape=(64, 64), n_cells=1, cell_radius=10)
    assert one["truth_labels"].values.max() == 1
    assert one["prior_labels"].values.max() >= 1
    empty = gsn.datasets.synthetic(shape=(64, 64), transcripts_per_cell=0)
    assert len(empty["transcripts"].compute()) == 0
    no_bg = gsn.datasets.synthetic(shape=(64, 64), background_fraction=0)
    assert (no_bg["transcripts"].compute()["true_cell_id"] > 0).all()


def test_streams_are_independent(small):
    """Changing the transcript model leaves geometry, image and prior unchanged."""
    other = gsn.datasets.synthetic(**SMALL, n_genes=12, transcripts_per_cell=30, background_fraction=0.3)
    a, b = _arrays(small), _arrays(other)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------------------------------------- the harder yardstick
def _profile_corr(sdata) -> float:
    df = sdata["transcripts"].compute()
    df = df[df["true_cell_id"] > 0]
    types = np.asarray(sdata.attrs["gsn_synthetic"]["cell_types"])
    counts = pd.crosstab(types[df["true_cell_id"].to_numpy() - 1], df["gene"].cat.codes.to_numpy()).to_numpy()
    prof = counts / counts.sum(axis=1, keepdims=True)
    return float(np.corrcoef(prof)[np.triu_indices(len(prof), 1)].mean())


def test_hard_options_do_what_they_say(default):
    hard = gsn.datasets.synthetic(**gsn.datasets.HARD)
    # same geometry: the harder options draw from their own random stream
    np.testing.assert_array_equal(hard["truth_labels"].values, default["truth_labels"].values)

    def densities(sdata):
        df = sdata["transcripts"].compute()
        cells, nuclei = sdata["truth_labels"].values, sdata["truth_nuclei"].values
        r, c = np.floor(df["y"]).astype(int), np.floor(df["x"]).astype(int)
        in_nuc = nuclei[r, c] > 0
        in_cyto = (cells[r, c] > 0) & ~in_nuc
        return in_nuc.sum() / (nuclei > 0).sum(), in_cyto.sum() / ((cells > 0) & (nuclei == 0)).sum()

    nuc0, cyto0 = densities(default)
    nuc1, cyto1 = densities(hard)
    assert nuc0 / cyto0 < 1.6 and nuc1 / cyto1 > 3  # RNA-poor cytoplasm
    assert _profile_corr(hard) > _profile_corr(default) + 0.2  # overlapping type profiles
    weak = np.asarray(hard.attrs["gsn_synthetic"]["weak_nucleus_cells"])
    assert 0.08 < len(weak) / hard["truth_labels"].values.max() < 0.25
    img0, img1 = default["dapi"].values[0].astype(float), hard["dapi"].values[0].astype(float)
    nuclei = hard["truth_nuclei"].values
    is_weak = np.isin(nuclei, weak)
    assert img1[is_weak].mean() < 0.5 * img0[is_weak].mean()  # weakly stained
    np.testing.assert_allclose(img1[(nuclei > 0) & ~is_weak].mean(), img0[(nuclei > 0) & ~is_weak].mean(), rtol=0.02)


def test_hard_options_off_reproduce_the_default(small):
    same = gsn.datasets.synthetic(**SMALL, cytoplasm_rna=1.0, cytoplasm_decay=None, profile_overlap=0.0,
                                  weak_nuclei=0.0)  # fmt: skip
    pd.testing.assert_frame_equal(same["transcripts"].compute(), small["transcripts"].compute())
    for k, v in _arrays(small).items():
        np.testing.assert_array_equal(_arrays(same)[k], v, err_msg=k)
