import numpy as np
import pytest

import gsn
from gsn.models import clean_labels, decode_instances, find_centers, make_targets


def iou_per_true_cell(pred, truth):
    out = {}
    for i in np.unique(truth[truth > 0]):
        m = truth == i
        j = np.bincount(pred[m]).argmax()
        if j == 0:
            out[i] = 0.0
            continue
        p = pred == j
        out[i] = (m & p).sum() / (m | p).sum()
    return out


def test_perfect_targets_decode_to_the_original_cells():
    sdata = gsn.datasets.synthetic(shape=(128, 128), seed=3)
    truth = np.asarray(sdata.labels["truth_labels"].values)
    t = make_targets(truth)
    pred = decode_instances(t.mask, t.center, t.offsets, min_area=1)
    ious = iou_per_true_cell(pred, truth)
    assert len(ious) > 20
    assert min(ious.values()) > 0.95
    assert pred.max() == len(np.unique(truth)) - 1
    np.testing.assert_array_equal(np.unique(pred), np.arange(pred.max() + 1))  # ids 1..n


def test_plateau_gives_one_centre_and_threshold_applies():
    c = np.zeros((20, 20), np.float32)
    c[5:7, 5:7] = 0.9  # flat top
    c[15, 15] = 0.4  # below threshold
    centers = find_centers(c, threshold=0.5)
    np.testing.assert_allclose(centers, [[5.5, 5.5]])
    assert len(find_centers(c, threshold=0.3)) == 2


def test_clean_labels_pieces_holes_small_and_relabel():
    lab = np.zeros((20, 20), np.int32)
    lab[1:8, 1:8] = 7
    lab[4, 4] = 0  # hole inside cell 7
    lab[15:18, 15:18] = 7  # a second, smaller piece of cell 7
    lab[1:8, 8:12] = 9  # touches cell 7
    lab[1:3, 14:16] = 4  # small cell
    out = clean_labels(lab, min_area=5)
    assert out.dtype == np.int32
    assert out[4, 4] == out[1, 1] != 0  # hole filled
    assert not out[15:18, 15:18].any()  # smaller piece dropped
    assert not out[1:3, 14:16].any()  # small cell removed
    np.testing.assert_array_equal(np.unique(out), np.arange(out.max() + 1))
    assert out[1, 1] == 1 and out[1, 8] == 2  # raster order


def test_hole_between_two_cells_is_not_filled():
    lab = np.zeros((9, 9), np.int32)
    lab[1:8, 1:5] = 1
    lab[1:8, 5:8] = 2
    lab[4, 4] = 0
    lab[4, 5] = 0  # hole bordered by both cells
    out = clean_labels(lab, min_area=1)
    assert out[4, 4] == 0 and out[4, 5] == 0


def test_nothing_to_decode():
    z = np.zeros((16, 16), np.float32)
    off = np.zeros((2, 16, 16), np.float32)
    assert not decode_instances(z, z, off).any()  # no centre, no foreground
    assert not decode_instances(np.ones_like(z), z, off).any()  # foreground but no centre
    with pytest.raises(ValueError, match="Shapes disagree"):
        decode_instances(z, z[:8], off)
