"""Transcript-aware growth of nuclei into whole cells, and the MECR purity metric."""

from __future__ import annotations

import numpy as np
import pytest

import gsn
from gsn.models import grow_labels
from gsn.tl._purity import mecr_from_counts


def _two_cells(rate_in=0.5, rate_bg=0.01, seed=0):
    """Two nuclei (radius 5) whose cells are discs of radius 15 and 9, transcripts inside at rate_in."""
    rng = np.random.default_rng(seed)
    h, w = 80, 120
    yy, xx = np.indices((h, w))
    nuclei = np.zeros((h, w), np.int32)
    nuclei[(yy - 40) ** 2 + (xx - 35) ** 2 <= 25] = 1
    nuclei[(yy - 40) ** 2 + (xx - 85) ** 2 <= 25] = 2
    cell1 = (yy - 40) ** 2 + (xx - 35) ** 2 <= 15**2
    cell2 = (yy - 40) ** 2 + (xx - 85) ** 2 <= 9**2
    rate = np.where(cell1 | cell2, rate_in, rate_bg)
    n = rng.poisson(rate)
    rows, cols = np.repeat(np.arange(h * w) // w, n.ravel()), np.repeat(np.arange(h * w) % w, n.ravel())
    x, y = cols + rng.uniform(size=len(cols)), rows + rng.uniform(size=len(rows))
    return nuclei, x, y, cell1, cell2


def test_growth_follows_the_transcripts():
    nuclei, x, y, cell1, cell2 = _two_cells()
    grown, report = grow_labels(nuclei, x, y, pixel_size=0.5, max_distance=10.0)
    # nuclei keep their pixels, ids are kept
    assert np.all(grown[nuclei > 0] == nuclei[nuclei > 0])
    assert set(np.unique(grown)) == {0, 1, 2}
    # each cell grows to its own (different) extent: IoU with its true disc is high
    for cid, truth in ((1, cell1), (2, cell2)):
        iou = np.sum((grown == cid) & truth) / np.sum((grown == cid) | truth)
        assert iou > 0.8, (cid, iou)
    assert report.rate_in > 10 * report.rate_background
    assert report.n_sectors >= 4


def test_growth_without_transcripts_keeps_nuclei_small():
    nuclei, *_ = _two_cells()
    grown, _ = grow_labels(nuclei, np.zeros(0), np.zeros(0), pixel_size=0.5, max_distance=10.0)
    # no RNA: no evidence of cytoplasm, the cells stay close to their nuclei
    assert np.sum(grown > 0) < 2.0 * np.sum(nuclei > 0)


def test_growth_is_deterministic_and_handles_empty_labels():
    nuclei, x, y, *_ = _two_cells()
    genes = np.arange(len(x)) % 5
    a, _ = grow_labels(nuclei, x, y, genes, pixel_size=0.5)
    b, _ = grow_labels(nuclei, x, y, genes, pixel_size=0.5)
    assert np.array_equal(a, b)
    empty, report = grow_labels(np.zeros((20, 20), np.int32), x, y)
    assert empty.max() == 0 and report.n_cells == 0


def test_grow_cells_beats_expansion_on_synthetic_truth():
    from skimage.segmentation import expand_labels

    sdata = gsn.datasets.synthetic(shape=(256, 256), transcripts_per_cell=200.0, seed=3)
    gsn.tl.grow_cells(sdata, "prior_labels", key_added="grown")
    prior = np.asarray(sdata["prior_labels"].values)
    assert "grown_table" in sdata and "grown_cell_id" in sdata["transcripts"].columns
    grown = gsn.tl.match_truth(sdata, "grown", "truth_labels").iloc[0]
    best = 0.0
    for r in (4, 6, 8, 10):
        gsn.tl.write_segmentation(sdata, expand_labels(prior, r), key_added="exp", overwrite=True)
        best = max(best, gsn.tl.match_truth(sdata, "exp", "truth_labels").iloc[0]["mean_matched_iou"])
    assert grown["mean_matched_iou"] > best
    assert sdata["grown_table"].uns["genesegnet"]["growth"]["n_types"] >= 2


def test_grow_cells_checks_its_arguments():
    sdata = gsn.datasets.synthetic(shape=(64, 64), seed=0)
    with pytest.raises(ValueError, match="quantile"):
        gsn.tl.grow_cells(sdata, "prior_labels", quantile=1.5)
    with pytest.raises(ValueError, match="max_distance"):
        gsn.tl.grow_cells(sdata, "prior_labels", max_distance=-1)
    with pytest.raises(ValueError, match="replace the input"):
        gsn.tl.grow_cells(sdata, "prior_labels", key_added="prior")
    gsn.tl.grow_cells(sdata, "prior_labels")
    with pytest.raises(ValueError, match="overwrite"):
        gsn.tl.grow_cells(sdata, "prior_labels")


def test_mecr_by_hand():
    # genes: a, b (type A), c (type B). cells: [a,c] both, [a], [c], [b]
    counts = np.array([[1, 0, 1], [2, 0, 0], [0, 0, 3], [0, 1, 0]])
    markers = {"A": ["a", "b"], "B": ["c"]}
    # pairs (a,c): both 1, either 3 -> 1/3; (b,c): both 0, either 3 -> 0
    assert mecr_from_counts(counts, ["a", "b", "c"], markers) == pytest.approx((1 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="two cell types"):
        mecr_from_counts(counts, ["a", "b", "c"], {"A": ["a"]})


def test_mecr_rises_with_expansion_on_synthetic():
    sdata = gsn.datasets.synthetic(shape=(256, 256), transcripts_per_cell=200.0, seed=4)
    gsn.tl.cells_from_labels(sdata, "truth_nuclei", key_added="nuclei")
    markers = gsn.tl.marker_genes(sdata, "nuclei")
    assert len(markers) >= 2
    curve = gsn.tl.expansion_curve(sdata, "truth_nuclei", markers, distances=(0, 2, 6, 12))
    # more transcripts in cells as cells grow, and less pure once they swallow neighbours
    assert np.all(np.diff(curve["transcripts_in_cells"]) > 0)
    assert curve["mecr"].iloc[-1] > curve["mecr"].iloc[0]
    assert gsn.tl.mecr(sdata, "nuclei", markers) == pytest.approx(curve["mecr"].iloc[0])


def test_compare_reports_mecr_with_shared_markers():
    sdata = gsn.datasets.synthetic(shape=(128, 128), transcripts_per_cell=200.0, seed=5)
    gsn.tl.cells_from_labels(sdata, "truth_nuclei", key_added="nuclei")
    gsn.tl.grow_cells(sdata, "truth_nuclei", key_added="grown")
    markers = gsn.tl.marker_genes(sdata, "nuclei")
    table = gsn.tl.compare(sdata, ["nuclei", "grown"], markers=markers)
    rows = table[table.metric == "mecr"].set_index("key")["value"]
    assert rows["nuclei"] == pytest.approx(gsn.tl.mecr(sdata, "nuclei", markers))
    assert rows["grown"] == pytest.approx(gsn.tl.mecr(sdata, "grown", markers))


def test_whole_cell_labels_are_regrown_from_their_cores():
    """Labels that already are whole cells hold most transcripts: they are eroded to cores and regrown.

    Cells drawn 3 px too large (into the background) shrink back to where the transcripts end; the
    same labels called nuclei may only grow.
    """
    from skimage.segmentation import expand_labels

    nuclei, x, y, cell1, cell2 = _two_cells(rate_in=0.5, rate_bg=0.01)
    truth = np.where(cell1, 1, 0) + np.where(cell2, 2, 0)
    too_big = expand_labels(truth, 3)
    regrown, report = grow_labels(too_big, x, y, pixel_size=0.5, max_distance=10.0)
    assert report.kind == "cells" and report.fraction_in_labels > 0.75
    assert report.eroded_px == pytest.approx(3.0)
    as_nuclei, nuclei_report = grow_labels(too_big, x, y, pixel_size=0.5, max_distance=10.0, kind="nuclei")
    assert nuclei_report.kind == "nuclei" and np.all(as_nuclei[too_big > 0] == too_big[too_big > 0])
    for cid, cell in ((1, cell1), (2, cell2)):
        iou = np.sum((regrown == cid) & cell) / np.sum((regrown == cid) | cell)
        before = np.sum((too_big == cid) & cell) / np.sum((too_big == cid) | cell)
        assert iou > before + 0.05 and iou > 0.85, (cid, before, iou)
    # nuclei (a minority of the molecules) are judged nuclei and keep every pixel
    grown, auto = grow_labels(nuclei, x, y, pixel_size=0.5, max_distance=10.0)
    assert auto.kind == "nuclei" and auto.fraction_in_labels < 0.6
    assert np.all(grown[nuclei > 0] == nuclei[nuclei > 0])
    with pytest.raises(ValueError, match="kind"):
        grow_labels(nuclei, x, y, kind="membrane")


def test_cores_keep_every_cell_and_do_not_depend_on_the_blocks():
    from gsn.blockwise import Window
    from gsn.models._growth import erode_kernel

    labels = np.zeros((40, 60), np.int32)
    labels[5:25, 5:25] = 1
    labels[5:25, 25:45] = 2  # touching 1: their shared border counts as an edge
    labels[30:32, 10:50] = 3  # 2 px thin: keeps its deepest pixels
    whole = Window(0, 40, 0, 60)
    cores = erode_kernel(labels, whole, whole, 3.0)
    assert set(np.unique(cores)) == {0, 1, 2, 3}
    assert np.all(cores[labels == 0] == 0) and np.all(cores[cores > 0] == labels[cores > 0])
    assert not (cores[:28, 22:28] > 0).any()  # 3 px off the shared border on both sides
    assert np.sum(cores == 1) == 14 * 14
    # a core window inside a larger window gives the same pixels as the whole image
    core = Window(10, 30, 20, 40)
    np.testing.assert_array_equal(erode_kernel(labels, whole, core, 3.0), cores[10:30, 20:40])


def test_grow_cells_on_whole_cells_does_not_depend_on_the_blocks_or_workers():
    """Whole cells take the extra passes (cores, rates again): same labels from one block, from
    blocks, and from blocks on 2 dask workers that cut their own windows."""
    from distributed import Client, LocalCluster

    sdata = gsn.datasets.synthetic(shape=(256, 256), transcripts_per_cell=60.0, seed=5)
    gsn.tl.grow_cells(sdata, "truth_labels", key_added="one")
    gsn.tl.grow_cells(sdata, "truth_labels", key_added="blocks", block_size=96)
    growth = sdata["one_table"].uns["genesegnet"]["growth"]
    assert growth["kind"] == "cells" and growth["eroded_px"] > 0
    one = np.asarray(sdata["one_labels"].values)
    np.testing.assert_array_equal(np.asarray(sdata["blocks_labels"].values), one)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        gsn.tl.grow_cells(sdata, "truth_labels", key_added="dask", block_size=96, client=client)
    np.testing.assert_array_equal(np.asarray(sdata["dask_labels"].values), one)
    with pytest.raises(ValueError, match="kind"):
        gsn.tl.grow_cells(sdata, "truth_labels", key_added="bad", kind="whole")
