"""clean_labels without a whole-image np.unique: the output is the previous implementation's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks._clean_labels import decoded_like, old_clean_labels

import gsn
from gsn.models import _decode, clean_labels, decode_instances, make_targets


def assert_same(labels: np.ndarray, **kwargs) -> np.ndarray:
    """Assert the new output equals the old one, dtype included, and return it."""
    new = clean_labels(labels, **kwargs)
    old = old_clean_labels(labels, **kwargs)
    assert new.dtype == old.dtype == np.int32
    np.testing.assert_array_equal(new, old)
    return new


@pytest.mark.parametrize("seed", range(4))
def test_random_labels_match_the_old_implementation(seed):
    """Random small maps of every integer dtype: many pieces, ties in piece size, holes, small cells."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        h, w = rng.integers(1, 40, size=2)
        dtype = rng.choice([np.int32, np.int64, np.uint16, np.uint8])
        labels = rng.integers(0, rng.integers(1, 9) + 1, size=(h, w)).astype(dtype)
        if rng.random() < 0.5:
            labels *= rng.random((h, w)) < 0.7
        if labels.dtype.kind == "i" and rng.random() < 0.2:
            labels[rng.random((h, w)) < 0.1] = -3  # treated as background
        assert_same(labels, min_area=int(rng.integers(0, 6)), fill_holes=bool(rng.random() < 0.8))


def test_decoder_like_map_matches_the_old_implementation():
    """A larger map with stray pixels, sparse and non-consecutive ids."""
    labels = decoded_like(side=300, seed=1)
    labels[labels > 0] += 1000  # ids need not be consecutive or small
    out = assert_same(labels)
    assert out.max() > 100
    np.testing.assert_array_equal(np.unique(out), np.arange(out.max() + 1))
    assert_same(labels, fill_holes=False, min_area=1)


@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_decoded_maps_match_the_old_implementation(monkeypatch, noise):
    """The maps decode_instances hands to clean_labels, from (noisy) targets of synthetic cells."""
    truth = np.asarray(gsn.datasets.synthetic(shape=(160, 160), seed=5).labels["truth_labels"].values)
    t = make_targets(truth)
    rng = np.random.default_rng(0)
    offsets = t.offsets + rng.normal(0, noise, t.offsets.shape).astype(np.float32)
    mask = t.mask + rng.normal(0, 0.2 * noise, t.mask.shape).astype(np.float32)
    seen = []

    def spy(labels, **kwargs):
        seen.append((labels.copy(), kwargs))
        return clean_labels(labels, **kwargs)

    monkeypatch.setattr(_decode, "clean_labels", spy)
    decode_instances(mask, t.center, offsets)
    assert len(seen) == 1
    labels, kwargs = seen[0]
    assert_same(labels, **kwargs)
    assert_same(labels, min_area=1, fill_holes=True)


def test_empty_and_edge_cases():
    """No cells, one row, all one cell, a cell with a hole at the border."""
    for labels in (np.zeros((5, 6), np.int32), np.zeros((1, 9), np.int64), np.ones((4, 4), np.uint8)):
        assert_same(labels, min_area=1)
    labels = np.zeros((6, 6), np.int32)
    labels[:, :3] = 2
    labels[0, 1] = 0  # touches the border: not a hole
    labels[3, 1] = 0  # a hole
    out = assert_same(labels, min_area=1)
    assert out[0, 1] == 0 and out[3, 1] == out[3, 0] == 1
    with pytest.raises(ValueError, match="2-D"):
        clean_labels(np.zeros((2, 2, 2), np.int32))
