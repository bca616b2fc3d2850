"""Accuracy against ground truth on a hand-built case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.test_metrics import make_sdata

from gsn.tl._metrics_core import iou_matrix, match_iou, segmentation_accuracy
from gsn.tl._metrics_truth import match_truth

pytestmark = pytest.mark.filterwarnings("ignore:The table is annotating:UserWarning")


def truth_case():
    truth = np.zeros((10, 12), np.int32)
    truth[0:4, 0:4] = 1  # T1: 16 px
    truth[0:4, 6:10] = 2  # T2: 16 px
    pred = np.zeros_like(truth)
    pred[0:4, 0:3] = 5  # P5 inside T1: IoU 12 / 16 = 0.75
    pred[1:5, 6:10] = 9  # P9 shifted down from T2: IoU 12 / 20 = 0.6
    pred[8:10, 0:2] = 3  # P3: spurious
    return pred, truth


def test_iou_and_matching_by_hand():
    pred, truth = truth_case()
    iou, pred_ids, true_ids = iou_matrix(pred, truth)
    assert pred_ids.tolist() == [3, 5, 9] and true_ids.tolist() == [1, 2]
    np.testing.assert_allclose(iou.toarray(), [[0, 0], [0.75, 0], [0, 0.6]])
    rows, cols, values = match_iou(iou, 0.5)
    assert sorted(zip(pred_ids[rows], true_ids[cols], strict=True)) == [(5, 1), (9, 2)]
    acc = segmentation_accuracy(iou, thresholds=(0.5, 0.65, 0.8))
    # 0.5: tp 2, fp 1 (P3), fn 0; 0.65: only P5-T1 -> tp 1, fp 2, fn 1; 0.8: nothing
    assert acc["tp"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(acc["precision"], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(acc["recall"], [1, 1 / 2, 0])
    np.testing.assert_allclose(acc["f1"], [4 / 5, 2 / 5, 0])
    np.testing.assert_allclose(acc["average_precision"], [2 / 3, 1 / 4, 0])
    np.testing.assert_allclose(acc["mean_matched_iou"].iloc[:2], [0.675, 0.75])


def test_match_truth_sdata_by_hand():
    pred, truth = truth_case()
    # (x, y) of molecules and whether the segmentation gets them right
    pts = [
        (1.5, 1.5, 1),  # T1 and P5 (matched to T1): right
        (3.5, 1.5, 1),  # T1 column 3, outside P5: wrong
        (0.5, 9.5, 0),  # background, in the spurious P3: wrong
        (11.5, 9.5, 0),  # background both: right
        (7.5, 0.5, 2),  # T2 row 0, above P9: wrong
        (7.5, 2.5, 2),  # T2 and P9 (matched to T2): right
    ]
    x, y, true_id = (np.array(v) for v in zip(*pts, strict=True))
    tx = pd.DataFrame({"x": x, "y": y, "gene": ["g"] * 6, "true_cell_id": true_id})
    sdata = make_sdata(np.zeros(truth.shape, np.uint8), {"seg": pred, "truth": truth}, tx, px=0.5)
    res = match_truth(sdata, "seg", "truth_labels", thresholds=(0.5, 0.65))
    assert res.index.tolist() == [0.5, 0.65]
    assert res.loc[0.5, "average_precision"] == pytest.approx(2 / 3)
    assert res.loc[0.5, "mean_true_iou"] == pytest.approx((0.75 + 0.6) / 2)
    assert res.loc[0.5, "transcript_accuracy"] == pytest.approx(3 / 6)
    assert res.loc[0.5, "transcript_precision"] == pytest.approx(2 / 3)  # in P5, P3, P9: P3 wrong
    assert res.loc[0.5, "transcript_recall"] == pytest.approx(2 / 4)
    # truth as a segmentation prefix, and without the truth column (label lookup gives the same ids)
    sdata.points["transcripts"] = sdata.points["transcripts"].drop(columns=["true_cell_id"])
    again = match_truth(sdata, "seg", "truth", thresholds=(0.5, 0.65))
    pd.testing.assert_frame_equal(res, again)


def test_compare_with_truth_on_foundation_segmentations(sdata):
    """Segmentations written by gsn.tl.cells_from_labels; the truth scored against itself is perfect."""
    import gsn
    from gsn.tl._compare import compare

    gsn.tl.cells_from_labels(sdata, "truth_labels")
    gsn.tl.cells_from_labels(sdata, "nuclei_labels")
    table = compare(sdata, ["truth", "nuclei"], truth_key="truth_labels", thresholds=(0.5, 0.9))
    ap = table[(table["metric"] == "average_precision") & (table["stat"] == "value")]
    assert ap[ap["key"] == "truth"]["value"].tolist() == [1.0, 1.0]
    # nuclei cover 100 / 400, 100 / 400 and 144 / 625 of their cells: no match at 0.5
    assert ap[ap["key"] == "nuclei"]["value"].tolist() == [0.0, 0.0]
    iou = table[(table["metric"] == "mean_true_iou")].set_index("key")["value"]
    assert iou["truth"] == 1.0 and iou["nuclei"] == pytest.approx((0.25 + 0.25 + 144 / 625) / 3)
    acc = table[(table["metric"] == "transcript_accuracy")].set_index("key")["value"]
    assert acc["truth"] == 1.0
    # the tables' counts feed n_transcripts: same total as the transcripts inside the cells
    n_tx = sdata.tables["truth_table"].X.sum()
    mean = table[(table["key"] == "truth") & (table["metric"] == "n_transcripts") & (table["stat"] == "mean")]
    assert mean["value"].iloc[0] * 3 == pytest.approx(n_tx)
