import numpy as np
import pytest

import gsn
from gsn.models._levelset import refine_label_image, refine_masks


def disk(shape, centre, r):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 < r**2


def test_clean_disk_is_stable():
    mask = disk((48, 48), (24, 24), 12)
    out = refine_masks(mask[None])[0]
    assert np.sum(out ^ mask) <= 0.02 * mask.sum()


def test_thin_spur_is_removed_and_strong_length_weight_fills_notch():
    spur = disk((64, 64), (32, 32), 10)
    spur[31:33, 32:52] = True
    out = refine_label_image(spur.astype(np.int32), nu=5.0)
    assert not out[31:33, 45:52].any()  # spur cut off, and only the largest piece kept
    notch = disk((64, 64), (32, 32), 12)
    notch[31:34, 20:32] = False
    paper = refine_label_image(notch.astype(np.int32)) > 0
    strong = refine_label_image(notch.astype(np.int32), nu=5.0) > 0
    assert not paper[32, 24]  # paper weights: the data term holds a 3-px notch open
    assert strong[32, 24]  # a stronger length term closes it


def test_cells_stay_disjoint_and_keep_ids():
    labels = np.zeros((60, 80), np.int32)
    labels[disk((60, 80), (30, 25), 13)] = 7
    labels[disk((60, 80), (30, 50), 13) & (labels == 0)] = 3  # touching, overlap resolved to 7
    out = refine_label_image(labels, nu=5.0)
    assert set(np.unique(out)) == {0, 3, 7}
    # a cell never takes pixels that belonged to another cell
    assert not np.any((labels == 7) & (out == 3)) and not np.any((labels == 3) & (out == 7))


def test_a_mask_evolves_the_same_whatever_it_is_stacked_with():
    small = disk((30, 34), (15, 16), 9)
    small[14:16, 16:30] = True  # a spur for the level set to work on
    alone = refine_masks(small[None], nu=3.0)[0]
    stack = np.zeros((2, 50, 60), bool)
    stack[0, :30, :34] = small
    stack[1] = disk((50, 60), (25, 30), 20)
    valid = np.zeros_like(stack)
    valid[0, :30, :34] = valid[1] = True
    padded = refine_masks(stack, nu=3.0, valid=valid)
    np.testing.assert_array_equal(padded[0, :30, :34], alone)
    assert not padded[0, 30:].any() and not padded[0, :, 34:].any()


def _rough_touching_cells(seed: int = 3) -> np.ndarray:
    from skimage.segmentation import expand_labels
    from tests.oracle import disks_sdata

    _, truth = disks_sdata(shape=(260, 300), spacing=26, radius=8, seed=seed)
    labels = expand_labels(truth, 4)  # neighbours touch
    rng = np.random.default_rng(seed)
    flip = rng.random(labels.shape) < 0.08  # ragged edges and specks for the level set to clean
    labels[flip & (labels > 0)] = 0
    return labels.astype(np.int32)


def test_blocks_refine_as_the_whole_image(tmp_path):
    """refine_labels on a labels element, block by block (three sizes, and on a 2-worker cluster): the
    same labels as the whole array at once."""
    import spatialdata as sd
    from distributed import Client, LocalCluster
    from spatialdata.models import Labels2DModel

    labels = _rough_touching_cells()
    whole = refine_label_image(labels, nu=3.0)
    assert (whole != labels).mean() > 0.02  # the level set changed something to compare
    sdata = sd.SpatialData(labels={"cells_labels": Labels2DModel.parse(labels, dims=("y", "x"))})
    for block_size in (64, 100, 1024):
        gsn.tl.refine_labels(sdata, "cells_labels", nu=3.0, block_size=block_size, halo=60,
                             key_added=f"b{block_size}")  # fmt: skip
        np.testing.assert_array_equal(sdata[f"b{block_size}"].values, whole)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        gsn.tl.refine_labels(sdata, "cells_labels", nu=3.0, block_size=64, halo=60, key_added="dask", client=client)
    np.testing.assert_array_equal(sdata["dask"].values, whole)


def test_a_narrow_halo_is_reported(caplog):
    import spatialdata as sd
    from spatialdata.models import Labels2DModel

    sdata = sd.SpatialData(labels={"cells_labels": Labels2DModel.parse(_rough_touching_cells(), dims=("y", "x"))})
    with caplog.at_level("WARNING", logger="gsn"):
        gsn.tl.refine_labels(sdata, "cells_labels", block_size=64, halo=4)
    assert "Pass a larger `halo`" in caplog.text
    with pytest.raises(ValueError, match="block_size"):
        gsn.tl.refine_labels(sdata, "cells_labels", block_size=8, key_added="x")


def test_empty_and_bad_input():
    assert not refine_label_image(np.zeros((10, 10), np.int32)).any()
    with pytest.raises(ValueError, match="2D label image"):
        refine_label_image(np.zeros((2, 3, 4), np.int32))
    assert refine_masks(np.zeros((0, 5, 5), bool)).shape == (0, 5, 5)


def test_refine_labels_on_spatialdata(sdata):
    gsn.tl.refine_labels(sdata, "truth_labels", nu=5.0)
    out = sdata["truth_labels_refined"].values
    assert set(np.unique(out)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="already exist"):
        gsn.tl.refine_labels(sdata, "truth_labels")
    arr = gsn.tl.refine_labels(sdata["truth_labels"].values, nu=5.0)
    np.testing.assert_array_equal(arr, out)
