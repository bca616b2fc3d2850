"""Training history: loss per epoch and, for recursive label refinement, IoU and cells per round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from ._utils import finish, make_axes

LOSS_COMPONENTS = {"loss_mask": "confidence (BCE)", "loss_center": "centre (L2)", "loss_offset": "offset (L2)"}
"""Per-epoch loss terms of Eq. 15 drawn beside the total, with their legend labels."""

ROUND_IOU_COLUMNS = ("mean_iou", "iou", "mean_best_iou")
"""Accepted names of the per-round agreement (mean over cells of the best IoU with the next labels)."""

STOP_IOU = 0.93
"""The paper's stopping threshold on the mean IoU between consecutive rounds."""

LOSS_COLOR = "#333333"
ROUND_COLOR = "#D55E00"
AREA_COLOR = "#0072B2"


def _frame(obj, what: str) -> pd.DataFrame:
    if obj is None:
        return pd.DataFrame()
    if isinstance(obj, pd.DataFrame):
        return obj.reset_index(drop=True)
    if isinstance(obj, Mapping):
        return pd.DataFrame(dict(obj))
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return pd.DataFrame.from_records(list(obj))
    raise TypeError(f"Cannot read the {what} from a {type(obj).__name__}; pass a list of dicts or a DataFrame.")


def history_frames(history, rounds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch and per-round training records as two DataFrames.

    Parameters
    ----------
    history
        A trained :class:`gsn.models.GeneSegNetModel` (its ``history``, and its ``rounds`` when it has
        them), a list of per-epoch dicts or a DataFrame, or a dict ``{"epochs": ..., "rounds": ...}``.
    rounds
        Per-round records (list of dicts or DataFrame), overriding those found in ``history``.

    Returns
    -------
    ``(epochs, rounds)``; either may be empty.
    """
    found_rounds = None
    if isinstance(history, Mapping) and ("epochs" in history or "rounds" in history):
        epochs = history.get("epochs", history.get("history"))
        found_rounds = history.get("rounds")
    elif hasattr(history, "history") and not isinstance(history, pd.DataFrame | Mapping | Sequence):
        epochs = history.history
        found_rounds = getattr(history, "rounds", None)
        if found_rounds is None:
            config = getattr(history, "config", None)
            found_rounds = getattr(config, "rounds", None)
            if found_rounds is None:
                found_rounds = (getattr(config, "train_params", None) or {}).get("rounds")
    else:
        epochs = history
    return _frame(epochs, "epochs"), _frame(rounds if rounds is not None else found_rounds, "rounds")


def _round_iou(rounds: pd.DataFrame) -> str | None:
    return next((c for c in ROUND_IOU_COLUMNS if c in rounds), None)


def _round_numbers(rounds: pd.DataFrame) -> np.ndarray:
    return rounds["round"].to_numpy() if "round" in rounds else np.arange(1, len(rounds) + 1)


def _draw_loss(ax: Axes, epochs: pd.DataFrame, rounds: pd.DataFrame, *, components: bool, logy: bool) -> None:
    if len(epochs) and "loss" in epochs:
        x = np.arange(1, len(epochs) + 1)
        if components:
            for col, label in LOSS_COMPONENTS.items():
                if col in epochs:
                    ax.plot(x, epochs[col].to_numpy(dtype=float), lw=1.0, ls="--", label=label)
        ax.plot(x, epochs["loss"].to_numpy(dtype=float), color=LOSS_COLOR, lw=2.0, marker="o" if len(x) <= 30 else None,
                ms=3, label="total (Eq. 15)", zorder=3)  # fmt: skip
        ax.set_xlabel("epoch")
        if "round" in epochs:
            r = epochs["round"].to_numpy()
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            for s in starts:
                if s > 0:
                    ax.axvline(s + 0.5, color="0.6", ls=":", lw=1)
                ax.text(s + 0.6, 0.01, f"round {r[s]}", transform=ax.get_xaxis_transform(), va="bottom", ha="left",
                        fontsize="x-small", color="0.35")  # fmt: skip
            ax.set_xlabel("epoch (all rounds)")
        ax.set_xlim(0.5, len(x) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    elif len(rounds) and "loss" in rounds:
        x = _round_numbers(rounds)
        ax.plot(x, rounds["loss"].to_numpy(dtype=float), color=LOSS_COLOR, lw=2.0, marker="o", label="total (Eq. 15)")
        ax.set_xlabel("round")
        ax.set_xticks(x)
    else:
        raise ValueError("No loss to plot: the history has no 'loss' per epoch or per round.")
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.legend(fontsize="small", frameon=False, loc="best")


def _draw_round_iou(ax: Axes, rounds: pd.DataFrame, col: str, stop_iou: float | None) -> None:
    x = _round_numbers(rounds)
    ax.plot(x, rounds[col].to_numpy(dtype=float), color=ROUND_COLOR, marker="o", lw=2, label="mean IoU")
    if stop_iou is not None:
        ax.axhline(stop_iou, color="0.4", ls="--", lw=1, label=f"stop at {stop_iou:g}")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylabel("mean best IoU with the next labels")
    ax.set_title("Label agreement between rounds")
    ax.legend(fontsize="small", frameon=False, loc="lower right")


def _draw_round_cells(ax: Axes, rounds: pd.DataFrame) -> None:
    x = _round_numbers(rounds)
    if "n_cells" in rounds:
        bars = ax.bar(x, rounds["n_cells"].to_numpy(dtype=float), color="0.75", width=0.6, label="cells")
        ax.bar_label(bars, fmt="%.0f", fontsize="small", label_type="center")
        ax.set_ylabel("cells")
    if "mean_area" in rounds:
        twin = ax.twinx() if "n_cells" in rounds else ax
        twin.plot(x, rounds["mean_area"].to_numpy(dtype=float), color=AREA_COLOR, marker="s", lw=2, label="mean area")
        twin.set_ylabel("mean cell area (px)", color=AREA_COLOR)
        twin.tick_params(axis="y", colors=AREA_COLOR)
        lo, hi = twin.get_ylim()
        twin.set_ylim(0, hi * 1.1)
    ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_title("Cells per round")


def training_history(
    model,
    *,
    rounds=None,
    components: bool = True,
    logy: bool = False,
    stop_iou: float | None = STOP_IOU,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Training curves: loss per epoch, and IoU and cell count per round of recursive refinement.

    The first panel shows the total loss of Eq. 15 per epoch (the mean over the epoch's steps) and,
    with ``components``, its confidence, centre and offset terms; when the epochs carry a ``round``
    column, dotted lines separate the rounds. With per-round records, two more panels follow: the
    mean over cells of the best IoU between a round's labels and the next round's (the paper stops
    once it exceeds 0.93), and the number of cells (bars) with their mean area (line).

    Parameters
    ----------
    model
        A :class:`gsn.models.GeneSegNetModel` (``model.history``, one dict per epoch with ``loss`` and
        optionally ``loss_mask``, ``loss_center``, ``loss_offset``, ``round``; per-round records from
        ``model.rounds`` when present), or the history itself: a list of per-epoch dicts, a DataFrame,
        or a dict ``{"epochs": [...], "rounds": [...]}``.
    rounds
        Per-round records (list of dicts or DataFrame) with ``round`` and any of ``mean_iou`` (or
        ``iou``), ``n_cells``, ``mean_area`` and ``loss``; overrides those of ``model``.
    components
        Also draw the three loss terms.
    logy
        Log axis for the loss.
    stop_iou
        IoU threshold drawn as a dashed line (``None``: none).
    ax
        Axes to draw into: one per panel (1 without rounds, up to 3 with them).
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes (a list for several panels).

    Examples
    --------
    >>> model = gsn.tl.train(sdata, labels_key="prior_labels", epochs=5)  # doctest: +SKIP
    >>> gsn.pl.training_history(model)  # doctest: +SKIP
    """
    epochs, rounds = history_frames(model, rounds)
    if not len(epochs) and not len(rounds):
        raise ValueError("The training history is empty: train the model first.")
    iou_col = _round_iou(rounds) if len(rounds) else None
    panels = ["loss"]
    if iou_col is not None:
        panels.append("iou")
    if len(rounds) and ("n_cells" in rounds or "mean_area" in rounds):
        panels.append("cells")
    fig, axes = make_axes(len(panels), ax, panel_size=(4.5, 3.6))
    if ax is None:
        fig.set_layout_engine("constrained")
    for name, panel in zip(panels, axes, strict=True):
        if name == "loss":
            _draw_loss(panel, epochs, rounds, components=components, logy=logy)
        elif name == "iou":
            _draw_round_iou(panel, rounds, iou_col, stop_iou)
        else:
            _draw_round_cells(panel, rounds)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)
