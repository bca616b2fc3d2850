import functools

import numpy as np
import pytest
from skimage.measure import label as cc_label

from gsn.models._blocks import assemble, keep_owned, make_blocks, run_blocks


def truth(seed=0, shape=(150, 170)):
    import gsn

    return gsn.datasets.synthetic(shape=shape, seed=seed)["truth_labels"].values


def threshold_segmenter(block, labels):
    """A stand-in for the network: the true cells visible in the window, renumbered locally."""
    window = labels[block.window]
    local = np.zeros(window.shape, np.int32)
    ids = np.unique(window[window > 0])
    lut = np.zeros(int(window.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    local = lut[window]
    return keep_owned(block, local)


def same_partition(a, b):
    """Two label images describe the same cells (up to renumbering)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (a > 0).sum() == (b > 0).sum() and len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_blocks_cover_image_once():
    blocks = make_blocks((100, 130), 40, 10)
    cover = np.zeros((100, 130), int)
    for b in blocks:
        cover[b.y0 : b.y1, b.x0 : b.x1] += 1
        assert b.wy0 == max(b.y0 - 10, 0) and b.wx1 == min(b.x1 + 10, 130)
    assert (cover == 1).all() and len(blocks) == 3 * 4


def test_blockwise_reassembles_whole_cells_exactly():
    labels = truth()
    blocks = make_blocks(labels.shape, 50, 40)  # halo wider than any cell
    out = assemble(labels.shape, run_blocks(blocks, functools.partial(threshold_segmenter, labels=labels),
                                            progress=False))  # fmt: skip
    assert same_partition(out, labels)
    assert out.max() == len(np.unique(labels[labels > 0]))


def test_assemble_is_order_independent():
    labels = truth(seed=1)
    blocks = make_blocks(labels.shape, 40, 30)
    results = [threshold_segmenter(b, labels) for b in blocks]
    a = assemble(labels.shape, results)
    b = assemble(labels.shape, results[::-1])
    np.testing.assert_array_equal(a, b)


def test_keep_owned_drops_cells_centred_elsewhere():
    from gsn.models._blocks import Block

    block = Block(0, 0, 10, 0, 10, 0, 20, 0, 20)
    window = np.zeros((20, 20), np.int32)
    window[2:6, 2:6] = 1  # centroid in core
    window[12:18, 12:18] = 2  # centroid outside core
    window[8:14, 8:11] = 3  # centroid at y = 10.5: outside
    owned = keep_owned(block, window)
    assert owned.n == 1 and set(np.unique(owned.labels)) == {0, 1}


@pytest.mark.parametrize("processes", [True])
def test_run_blocks_on_local_cluster_matches_sequential(processes):
    from distributed import Client, LocalCluster

    labels = truth(seed=2, shape=(120, 120))
    blocks = make_blocks(labels.shape, 60, 40)
    fn = functools.partial(threshold_segmenter, labels=labels)
    sequential = assemble(labels.shape, run_blocks(blocks, fn, progress=False))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        distributed = assemble(labels.shape, run_blocks(blocks, fn, client=client, progress=False))
    np.testing.assert_array_equal(distributed, sequential)
    assert cc_label(sequential > 0).max() > 0
