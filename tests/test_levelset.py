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
