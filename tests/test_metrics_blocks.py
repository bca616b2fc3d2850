"""The paper's metrics block by block: the same numbers as the whole-image definitions, whatever the blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from spatialdata.models import Image2DModel

import gsn
from gsn.blockwise import ArraySource
from gsn.tl import _metrics_core as core
from gsn.tl._cells import transcript_index
from gsn.tl._metrics_blocks import (
    cell_calling_blocks,
    iou_blocks,
    labels_at_blocks,
    morphology_blocks,
    pixel_coverage_blocks,
    rna_coverage_blocks,
)


@pytest.fixture(scope="module")
def sample():
    sdata = gsn.datasets.synthetic(shape=(300, 260), seed=3)
    labels = np.asarray(sdata["prior_labels"].values)
    truth = np.asarray(sdata["truth_labels"].values)
    image = np.asarray(sdata["dapi"].values)[0]
    index = transcript_index(sdata, "transcripts", sdata["prior_labels"], "prior_labels")
    tx = index.everything()
    return sdata, labels, truth, image, index, tx


@pytest.mark.parametrize("block_size", [64, 97, 1024])
def test_block_metrics_equal_whole_image_definitions(sample, block_size):
    _, labels, truth, image, index, tx = sample
    source = ArraySource(labels)
    assert labels.max() > 10 and len(tx) > 1000 and image.dtype == np.uint16

    expected = core.cell_calling_from_labels(labels, tx.x, tx.y, deltas=(3, 5, 7))
    got = cell_calling_blocks(source, index, deltas=(3, 5, 7), block_size=block_size, progress=False)
    pd.testing.assert_frame_equal(got, expected)

    expected = core.morphology_from_labels(labels)
    got = morphology_blocks(source, block_size=block_size, halo=128, progress=False)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)

    for img in (image, image.astype(np.float32) / 7):  # integer (histograms) and float (values) paths
        expected = core.pixel_coverage_from_labels(labels, img, bins=7)
        got = pixel_coverage_blocks(source, ArraySource(img), bins=7, block_size=block_size, progress=False)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
        expected = core.rna_coverage_from_labels(labels, img, tx.x, tx.y, bins=5)
        got = rna_coverage_blocks(source, ArraySource(img), index, bins=5, block_size=block_size, progress=False)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    iou, pred_ids, true_ids = core.iou_matrix(labels, truth)
    got, got_pred, got_true = iou_blocks(source, ArraySource(truth), block_size=block_size, progress=False)
    np.testing.assert_array_equal(got_pred, pred_ids)
    np.testing.assert_array_equal(got_true, true_ids)
    np.testing.assert_allclose(got.toarray(), iou.toarray(), rtol=1e-12)

    cells = labels_at_blocks(source, index, block_size=block_size, progress=False)
    expected = np.zeros(index.n, np.int64)
    expected[tx.row] = core.label_at(labels, tx.x, tx.y)
    np.testing.assert_array_equal(cells, expected)


def test_morphology_warns_about_cells_wider_than_the_context(caplog):
    labels = np.zeros((200, 200), np.int32)
    labels[20:180, 30:60] = 1  # 160 px tall
    labels[100:110, 100:110] = 2
    with caplog.at_level("WARNING", logger="gsn"):
        got = morphology_blocks(ArraySource(labels), block_size=64, halo=40, progress=False)
    assert "1 cell(s) are wider than the 40 px context" in caplog.text
    assert got.loc[2, "area"] == 100  # the small cell is measured whole


def test_public_metrics_take_a_block_size_and_check_it(sample):
    sdata = sample[0]
    a = gsn.tl.cell_calling(sdata, "prior_labels", block_size=64)
    b = gsn.tl.cell_calling(sdata, "prior_labels")
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="`block_size` must be at least 64"):
        gsn.tl.pixel_coverage(sdata, "prior_labels", block_size=10)


def test_coverage_refuses_an_image_in_another_frame(sample):
    sdata = sample[0]
    sdata["small"] = Image2DModel.parse(np.zeros((1, 30, 30), np.uint8), dims=("c", "y", "x"))
    try:
        with pytest.raises(ValueError, match="not in the same pixel frame"):
            gsn.tl.pixel_coverage(sdata, "prior_labels", image_key="small")
    finally:
        del sdata["small"]
