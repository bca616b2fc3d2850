import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from tests.plotting import check_figure

import gsn


def _epochs(n_rounds=1, n_epochs=6):
    records = []
    for r in range(1, n_rounds + 1):
        for e in range(n_epochs):
            loss = 0.9 * np.exp(-e / 3) / r + 0.2
            records.append({"epoch": len(records) + 1, "loss": loss, "loss_mask": 0.4 * loss, "loss_center": 0.1 * loss,
                            "loss_offset": 0.5 * loss, "lr": 1e-3, "seconds": 1.0})  # fmt: skip
            if n_rounds > 1:
                records[-1]["round"] = r
    return records


ROUNDS = [
    {"round": 1, "mean_iou": 0.71, "n_cells": 737, "mean_area": 1295.0},
    {"round": 2, "mean_iou": 0.89, "n_cells": 760, "mean_area": 1350.0},
    {"round": 3, "mean_iou": 0.95, "n_cells": 765, "mean_area": 1362.0},
]


def test_loss_per_epoch_from_a_model(tmp_path):
    from gsn.models import SLIM_WIDTHS, GeneSegNetModel, ModelConfig

    model = GeneSegNetModel(ModelConfig(widths=list(SLIM_WIDTHS), history=_epochs()))
    fig = gsn.pl.training_history(model, return_fig=True)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["total (Eq. 15)"].get_ydata(), [r["loss"] for r in model.history])
    np.testing.assert_allclose(lines["offset (L2)"].get_ydata(), [r["loss_offset"] for r in model.history])
    np.testing.assert_array_equal(lines["total (Eq. 15)"].get_xdata(), np.arange(1, 7))
    assert ax.get_title() == "Training loss" and ax.get_xlabel() == "epoch"
    check_figure(fig, "training_history_epochs", tmp_path)

    # the same from a plain list or DataFrame, without the loss terms
    ax = gsn.pl.training_history(pd.DataFrame(model.history), components=False, logy=True, show=False)
    assert [line.get_label() for line in ax.get_lines()] == ["total (Eq. 15)"] and ax.get_yscale() == "log"
    plt.close("all")


def test_rounds_add_iou_and_cell_panels(tmp_path):
    fig = gsn.pl.training_history({"epochs": _epochs(3), "rounds": ROUNDS}, return_fig=True)
    loss_ax, iou_ax, cells_ax, area_ax = fig.axes  # the last is the twin axis of mean area
    assert [a.get_title() for a in (loss_ax, iou_ax, cells_ax)] == [
        "Training loss", "Label agreement between rounds", "Cells per round"]  # fmt: skip
    assert loss_ax.get_xlabel() == "epoch (all rounds)"
    assert [t.get_text() for t in loss_ax.texts] == ["round 1", "round 2", "round 3"]
    iou, stop = iou_ax.get_lines()
    np.testing.assert_allclose(iou.get_ydata(), [r["mean_iou"] for r in ROUNDS])
    assert stop.get_ydata()[0] == 0.93
    assert [p.get_height() for p in cells_ax.patches] == [r["n_cells"] for r in ROUNDS]
    np.testing.assert_allclose(area_ax.get_lines()[0].get_ydata(), [r["mean_area"] for r in ROUNDS])
    check_figure(fig, "training_history_rounds", tmp_path)


def test_rounds_from_model_attribute_or_argument():
    from gsn.models import SLIM_WIDTHS, GeneSegNetModel, ModelConfig

    model = GeneSegNetModel(ModelConfig(widths=list(SLIM_WIDTHS), history=_epochs(3)))
    model.rounds = ROUNDS  # where recursive training keeps its per-round records
    axes = gsn.pl.training_history(model, show=False)
    assert len(axes) == 3
    axes = gsn.pl.training_history(model, rounds=pd.DataFrame(ROUNDS).iloc[:0], show=False)
    assert not isinstance(axes, list)  # explicit (empty) rounds override the model's
    # per-round records alone: loss per round, and `iou` as the IoU column
    rounds = [{"round": r["round"], "iou": r["mean_iou"], "loss": 1.0 / r["round"]} for r in ROUNDS]
    loss_ax, iou_ax = gsn.pl.training_history({"rounds": rounds}, stop_iou=None, show=False)
    assert loss_ax.get_xlabel() == "round"
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), [1.0, 0.5, 1 / 3])
    assert len(iou_ax.get_lines()) == 1
    plt.close("all")


def test_history_errors():
    with pytest.raises(ValueError, match="empty"):
        gsn.pl.training_history([])
    with pytest.raises(ValueError, match="No loss"):
        gsn.pl.training_history([{"epoch": 1, "lr": 0.1}])
    with pytest.raises(TypeError, match="Cannot read"):
        gsn.pl.training_history(3.0)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="needs 3 axes"):
        gsn.pl.training_history({"epochs": _epochs(3), "rounds": ROUNDS}, ax=ax)
    assert gsn.pl.training_history(_epochs(), ax=ax) is ax
    plt.close("all")
