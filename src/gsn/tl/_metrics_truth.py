"""Accuracy of a segmentation against ground truth (synthetic data)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import spatialdata as sd

from .._constants import Key
from .._elements import label_source
from .._logging import logger
from ..blockwise import serial_io
from ._metrics import labels_source
from ._metrics_blocks import iou_blocks, labels_at_blocks
from ._metrics_core import DEFAULT_THRESHOLDS, match_iou, mean_true_iou, segmentation_accuracy, transcript_accuracy

TRUTH_COLUMN = "true_cell_id"


def _truth_labels(sdata: sd.SpatialData, truth_key: str) -> str:
    for name in (truth_key, Key.labels(truth_key)):
        if name in sdata.labels:
            return name
    present = ", ".join(repr(k) for k in sdata.labels) or "none"
    raise KeyError(f"No truth labels {truth_key!r} or {Key.labels(truth_key)!r} (labels present: {present}).")


def match_truth(
    sdata: sd.SpatialData,
    key: str,
    truth_key: str = "truth_labels",
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    points_key: str | None = None,
    truth_column: str = TRUTH_COLUMN,
    match_threshold: float = 0.5,
) -> pd.DataFrame:
    """Compare a segmentation with ground-truth cells: matched IoU, precision/recall/F1, AP, transcripts.

    Predicted and true cells are matched one-to-one at each IoU threshold (maximum matching of the
    pairs with IoU >= threshold; for thresholds >= 0.5 a cell has at most one such partner). At each
    threshold: true positives ``tp`` (matched pairs), false positives ``fp`` (unmatched predicted
    cells), false negatives ``fn`` (unmatched true cells), precision, recall, F1 and the average
    precision of the cell-segmentation literature (Cellpose, StarDist) ``tp / (tp + fp + fn)``.
    Average ``average_precision`` over the rows for the usual mean AP over thresholds.

    Transcripts: each predicted cell stands for the true cell it is matched to at
    ``match_threshold``; a molecule is correctly assigned when its predicted cell stands for its true
    cell, or both say background.

    Parameters
    ----------
    sdata
        SpatialData object with the segmentation, the truth and (optionally) the transcripts.
    key
        Prefix of the segmentation (or a labels element name).
    truth_key
        Truth labels: a labels element name (e.g. ``"truth_labels"``) or a segmentation prefix.
    thresholds
        IoU thresholds (default 0.5, 0.55, ..., 0.9).
    points_key
        Transcripts element; may be omitted when there is exactly one. Without any points element the
        transcript columns are NaN.
    truth_column
        Column of the transcripts with each molecule's true cell (0 = background). When absent, the
        truth segmentation's ``<prefix>_cell_id`` column, else the truth label under each molecule.
    match_threshold
        IoU threshold of the matching used for transcript assignment.

    Returns
    -------
    DataFrame indexed by ``threshold`` with ``n_pred``, ``n_true``, ``tp``, ``fp``, ``fn``, ``precision``,
    ``recall``, ``f1``, ``average_precision``, ``mean_matched_iou`` (mean IoU of the matched pairs), and
    the threshold-free ``mean_true_iou`` (mean over true cells of their best IoU),
    ``transcript_accuracy`` (all molecules), ``transcript_precision`` (molecules put in a cell) and
    ``transcript_recall`` (molecules truly in a cell), repeated on every row.
    """
    from ..blockwise import BLOCK_SIZE

    pred_name, pred_element, pred = labels_source(sdata, key)
    truth_name, _, truth = label_source(sdata, _truth_labels(sdata, truth_key))
    if tuple(truth.shape) != tuple(pred.shape):
        raise ValueError(
            f"Segmentation {pred_name!r} {tuple(pred.shape)} and truth {truth_name!r} {tuple(truth.shape)} are not in "
            "the same frame."
        )
    iou, pred_ids, true_ids = iou_blocks(pred, truth, block_size=BLOCK_SIZE)
    table = segmentation_accuracy(iou, thresholds=thresholds)
    table["mean_true_iou"] = mean_true_iou(iou)
    scores = dict.fromkeys(("transcript_accuracy", "transcript_precision", "transcript_recall"), np.nan)
    if points_key is not None or len(sdata.points) == 1:
        from .._elements import get_points
        from ._cells import transcript_index

        points_key, points = get_points(sdata, points_key)
        pred_col = Key.cell_id(Key.prefix(pred_name))
        truth_col = next((c for c in (truth_column, Key.cell_id(Key.prefix(truth_name))) if c in points.columns), None)
        index = None
        if pred_col not in points.columns or truth_col is None:
            index = transcript_index(sdata, points_key, pred_element, pred_name)

        def cells(column, source):
            if column is not None and column in points.columns:
                with serial_io():
                    return points[column].compute(scheduler="synchronous").to_numpy()
            return labels_at_blocks(source, index, block_size=BLOCK_SIZE)

        pred_cell, true_cell = cells(pred_col, pred), cells(truth_col, truth)
        rows, cols, _ = match_iou(iou, match_threshold)
        scores = transcript_accuracy(pred_cell, true_cell, pred_ids, true_ids, rows, cols)
    elif len(sdata.points) > 1:
        logger.info("Several points elements and no `points_key`: transcript accuracy left out.")
    for name, value in scores.items():
        table[name] = value
    return table
