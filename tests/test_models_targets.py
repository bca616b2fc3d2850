import numpy as np
import pytest

from gsn.models import cell_centers, make_targets, make_targets_batch


def random_labels(seed=0, shape=(40, 50), n=12):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    ids = rng.choice(np.arange(1, 1000), n, replace=False)
    for i in ids:
        r, c = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        lab[r : r + rng.integers(2, 9), c : c + rng.integers(2, 9)] = i
    return lab


def test_centers_are_per_axis_medians():
    lab = random_labels()
    ids, centers = cell_centers(lab)
    assert list(ids) == sorted(set(np.unique(lab)) - {0})
    for i, (r, c) in zip(ids, centers, strict=True):
        rows, cols = np.nonzero(lab == i)
        assert (r, c) == (np.median(rows), np.median(cols))


def test_targets_match_definitions():
    lab = random_labels(1)
    t = make_targets(lab, sigma=2.0)
    assert t.mask.dtype == t.center.dtype == t.offsets.dtype == np.float32
    np.testing.assert_array_equal(t.mask, lab > 0)
    ids, centers = cell_centers(lab)
    o = np.floor(centers + 0.5).astype(int)
    rows, cols = np.nonzero(lab)
    k = np.searchsorted(ids, lab[rows, cols])
    # V(p) = o - p, so p + V(p) lands exactly on the cell's (rounded) centre
    np.testing.assert_array_equal(rows + t.offsets[0, rows, cols], o[k, 0])
    np.testing.assert_array_equal(cols + t.offsets[1, rows, cols], o[k, 1])
    assert not t.offsets[:, lab == 0].any()
    # one peak of height 1 per cell, at its centre
    np.testing.assert_allclose(t.center[o[:, 0], o[:, 1]], 1.0)
    assert (t.center >= 1.0 - 1e-6).sum() == len(np.unique(o, axis=0))
    assert t.center.min() >= 0 and t.center.max() <= 1


def test_gaussian_peak_shape():
    lab = np.zeros((21, 21), np.int32)
    lab[8:13, 8:13] = 3
    t = make_targets(lab, sigma=2.0)
    assert t.center[10, 10] == 1.0
    assert t.center[10, 12] == pytest.approx(np.exp(-4 / 8), rel=1e-6)


def test_empty_labels_and_batch():
    t = make_targets(np.zeros((5, 6), np.int64))
    assert not t.mask.any() and not t.center.any() and not t.offsets.any()
    b = make_targets_batch(np.stack([random_labels(2), random_labels(3)]))
    assert b.mask.shape == (2, 40, 50) and b.offsets.shape == (2, 2, 40, 50)


def test_rejects_float_labels():
    with pytest.raises(TypeError):
        make_targets(np.zeros((4, 4)))
