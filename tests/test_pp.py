import dask.array as da
import numpy as np
import pytest
from tests.conftest import tiny_arrays

import gsn
from gsn.pp._rna_map import rna_location_map_array


def brute_force_map(x, y, shape, sigma):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    total = np.zeros(shape)
    for xi, yi in zip(np.floor(x), np.floor(y), strict=True):
        total += np.exp(-((rr - yi) ** 2 + (cc - xi) ** 2) / (2 * sigma**2))
    return np.minimum(total, 1)


def test_rna_map_matches_eq5_brute_force():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 40, 30), rng.uniform(0, 30, 30)
    got = rna_location_map_array(x, y, (30, 40), sigma=3.0)
    # The kernel is cut at 4 sigma, where the Gaussian is 3e-4 of its peak.
    np.testing.assert_allclose(got, brute_force_map(x, y, (30, 40), 3.0), atol=1e-3)
    assert got.dtype == np.float32 and got.max() <= 1.0


def test_rna_map_single_transcript_is_unnormalised_gaussian():
    got = rna_location_map_array(np.array([10.7]), np.array([5.2]), (12, 20), sigma=2.0)
    assert got[5, 10] == pytest.approx(1.0)
    assert got[5, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-5)


def test_rna_map_lazy_chunks_equal_eager():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-5, 205, 2000), rng.uniform(-5, 155, 2000)
    eager = rna_location_map_array(x, y, (150, 200), sigma=4.0)
    lazy = rna_location_map_array(x, y, (150, 200), sigma=4.0, chunks=64)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), eager, atol=1e-6)


def test_rna_map_max_mode_is_nearest_gaussian():
    got = rna_location_map_array(np.array([2.0, 4.0]), np.array([2.0, 2.0]), (5, 7), sigma=2.0, mode="max")
    assert got[2, 3] == pytest.approx(np.exp(-1 / 8), rel=1e-5)  # nearest transcript 1 px away
    summed = rna_location_map_array(np.array([2.0, 4.0]), np.array([2.0, 2.0]), (5, 7), sigma=2.0)
    assert summed[2, 3] == pytest.approx(min(1.0, 2 * np.exp(-1 / 8)))


def test_rna_location_map_element(sdata):
    gsn.pp.rna_location_map(sdata, sigma=3.0)
    element = sdata["gsn_rna_map"]
    assert element.dims == ("c", "y", "x") and list(element.coords["c"].values) == ["rna"]
    _, _, _, df = tiny_arrays()
    np.testing.assert_allclose(element.values[0], rna_location_map_array(df.x, df.y, (64, 80), sigma=3.0), atol=1e-6)
    # The image keeps being found without naming it once the RNA map is there.
    gsn.pp.watershed(sdata)
    with pytest.raises(ValueError, match="already exist"):
        gsn.pp.rna_location_map(sdata)


def test_rna_location_map_gene_subset_and_unknown_gene(sdata):
    only_a = gsn.pp.rna_location_map(sdata, genes=["A"], inplace=False)
    full = gsn.pp.rna_location_map(sdata, inplace=False)
    assert float(only_a.sum()) < float(full.sum())
    with pytest.raises(KeyError, match="Gene.*not found.*'Nope'"):
        gsn.pp.rna_location_map(sdata, genes=["A", "Nope"], inplace=False)


def test_normalize_whole_image_percentiles(sdata):
    gsn.pp.normalize(sdata)
    out = sdata["dapi_normalized"].values
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    flat = gsn.pp.normalize_array(np.full((4, 4), 7.0))
    assert not flat.any()


def test_watershed_separates_touching_nuclei():
    image = np.zeros((40, 60))
    rr, cc = np.mgrid[:40, :60]
    image[(rr - 20) ** 2 + (cc - 20) ** 2 < 100] = 1
    image[(rr - 20) ** 2 + (cc - 36) ** 2 < 100] = 1  # overlaps the first disk
    labels = gsn.pp.watershed_array(image, smooth=0, erosion_radius=1, min_distance=5)
    assert labels.max() == 2
    assert labels[20, 20] != labels[20, 36] and labels[20, 20] > 0 and labels[20, 36] > 0
    assert labels[0, 0] == 0


def test_watershed_element_carries_image_transform(sdata):
    gsn.pp.watershed(sdata, min_distance=3)
    from spatialdata.transformations import get_transformation

    labels = sdata["watershed_labels"]
    assert int(labels.max()) == 3
    assert get_transformation(labels) == get_transformation(sdata["dapi"])


def _nuclear_stain(seed: int = 2) -> np.ndarray:
    """Touching nuclei of uneven brightness, blurred, with noise: work for every step of the watershed."""
    from scipy import ndimage
    from tests.oracle import disks_sdata

    _, truth = disks_sdata(shape=(260, 300), spacing=20, radius=9, seed=seed)
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(400, 1200, truth.max() + 1)
    brightness[0] = 60
    return ndimage.gaussian_filter(brightness[truth], 1.5) + rng.normal(0, 30, truth.shape)


def test_watershed_threshold_is_skimage_otsu_from_block_histograms():
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from gsn.blockwise import block_grid
    from gsn.pp._watershed import _Steps, _threshold, hist_kernel, range_kernel

    image = _nuclear_stain()
    steps = _Steps(gsn.pp.percentiles(image), 1.0, 2, 5, 20)
    expected = threshold_otsu(ndimage.gaussian_filter(gsn.pp.normalize_array(image), 1.0))
    blocks = block_grid(image.shape, 64)
    args = [(image[b.grow(steps.halo(), image.shape).slices], b.grow(steps.halo(), image.shape), b, image.shape)
            for b in blocks]  # fmt: skip
    got = _threshold(steps, None, [range_kernel(steps, *a) for a in args],
                     lambda r: [hist_kernel(steps, *a, r) for a in args])  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-6)


def test_watershed_blocks_give_the_whole_image_labels():
    """gsn.pp.watershed block by block (three sizes, and on a 2-worker dask cluster) = watershed_array."""
    import spatialdata as sd
    from distributed import Client, LocalCluster
    from spatialdata.models import Image2DModel

    image = _nuclear_stain()
    whole = gsn.pp.watershed_array(image)
    assert 100 < whole.max() < 250  # most of the ~190 nuclei, some merged or split
    sdata = sd.SpatialData(images={"dapi": Image2DModel.parse(image[None], dims=("c", "y", "x"))})
    for block_size in (64, 100, 1024):
        gsn.pp.watershed(sdata, block_size=block_size, halo=40, key_added=f"b{block_size}")
        np.testing.assert_array_equal(sdata[f"b{block_size}_labels"].values, whole)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        gsn.pp.watershed(sdata, block_size=64, halo=40, key_added="dask", client=client)
    np.testing.assert_array_equal(sdata["dask_labels"].values, whole)


def test_rna_map_auto_scale_keeps_contrast_on_dense_data():
    rng = np.random.default_rng(3)
    # dense cluster in the left half, sparse background on the right
    x = np.r_[rng.uniform(0, 50, 20000), rng.uniform(50, 100, 200)]
    y = rng.uniform(0, 80, len(x))
    eq5 = rna_location_map_array(x, y, (80, 100), sigma=5.0)
    auto = rna_location_map_array(x, y, (80, 100), sigma=5.0, scale="auto")
    assert eq5[:, 10:40].min() == 1.0 and np.mean(eq5[:, 60:] >= 0.99) > 0.5  # Eq. 5 saturates both halves
    assert auto[:, 60:].mean() < 0.3 * auto[:, 10:40].mean()  # auto scaling tells them apart
    lazy = rna_location_map_array(x, y, (80, 100), sigma=5.0, scale="auto", chunks=32).compute()
    np.testing.assert_allclose(lazy, auto, atol=1e-5)
    sparse_x, sparse_y = rng.uniform(0, 100, 5), rng.uniform(0, 80, 5)
    np.testing.assert_array_equal(
        rna_location_map_array(sparse_x, sparse_y, (80, 100), sigma=2.0, scale="auto"),
        rna_location_map_array(sparse_x, sparse_y, (80, 100), sigma=2.0),
    )


def test_watershed_defaults_are_the_ones_segment_uses_for_missed_nuclei():
    import inspect

    from gsn.pp._watershed import DEFAULTS

    signature = inspect.signature(gsn.pp.watershed).parameters
    assert {name: signature[name].default for name in DEFAULTS} == DEFAULTS
