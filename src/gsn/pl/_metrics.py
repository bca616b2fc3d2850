"""Fig. 2-style metric panels (GeneSegNet paper, Fig. 2c-j) from the tidy table of :func:`gsn.tl.compare`.

Every panel function takes that table, or a SpatialData object from which it computes the table with
:func:`gsn.tl.compare`. Each segmentation key has one colour in every panel (:func:`key_colors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import spatialdata as sd
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from ._segmentation import _segmentation_keys
from ._utils import finish, make_axes

PALETTE = ("#0072B2", "#D55E00", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""Okabe-Ito colours (colour-blind safe), given to segmentation keys in order."""

KEY_COLORS = {"genesegnet": "#D55E00", "watershed": "#0072B2", "prior": "#E69F00", "truth": "#000000"}
"""Fixed colours of the keys gsn itself writes, so that they look the same in every figure."""

COMPARE_COLUMNS = ("key", "metric", "stat", "level", "lower", "upper", "value")

METRIC_LABELS = {
    "area": "area (px)",
    "perimeter": "perimeter (px)",
    "elongation": "elongation ($e_b / e_a$)",
    "convexity": "convexity (hull / cell perimeter)",
    "n_genes": "genes detected per cell",
    "n_transcripts": "transcripts per cell",
}
METRIC_TITLES = {
    "area": "Cell area",
    "perimeter": "Cell perimeter",
    "elongation": "Elongation",
    "convexity": "Convexity",
    "n_genes": "Genes per cell",
    "n_transcripts": "Transcripts per cell",
}
REPRO_TITLE = "Gene-gene correlation reproducibility"
LOG_METRICS = ("area", "n_transcripts")
"""Per-cell metrics drawn on a log axis by default (they span orders of magnitude)."""

PANELS = (
    "n_cells",
    "cell_calling",
    "pixel_coverage",
    "rna_coverage",
    "genes_per_cell",
    "area",
    "elongation",
    "convexity",
    "correlation_reproducibility",
)
"""Panels of :func:`compare`, in their default order."""

_PANEL_METRIC = {
    "n_cells": ("n_cells", "value"),
    "cell_calling": ("cell_calling", "ratio"),
    "pixel_coverage": ("pixel_coverage", "fraction"),
    "rna_coverage": ("rna_coverage", "fraction"),
    "genes_per_cell": ("n_genes", "cell"),
    "area": ("area", "median"),
    "elongation": ("elongation", "median"),
    "convexity": ("convexity", "median"),
    "correlation_reproducibility": ("correlation_reproducibility", "median"),
}


# --------------------------------------------------------------------------------------------------
# colours and the compare table
# --------------------------------------------------------------------------------------------------
def key_colors(keys: Sequence[str], palette: Mapping[str, str] | Sequence[str] | str | None = None) -> dict[str, str]:
    """Colour of each segmentation key, the same in every panel.

    Parameters
    ----------
    keys
        Segmentation prefixes, in plotting order.
    palette
        ``None``: :data:`KEY_COLORS` for gsn's own keys and :data:`PALETTE` for the others; a mapping
        from key to colour (keys it lacks get the defaults); a sequence of colours, or the name of a
        matplotlib colormap, used in the order of ``keys``.

    Returns
    -------
    Dict from key to a hex colour.
    """
    keys = [str(k) for k in keys]
    if isinstance(palette, str):
        cmap = matplotlib.colormaps[palette]
        n = getattr(cmap, "N", 256)
        listed = n < 256
        return {k: mcolors.to_hex(cmap(i % n if listed else i / max(len(keys) - 1, 1))) for i, k in enumerate(keys)}
    if palette is not None and not isinstance(palette, Mapping):
        colors = list(palette)
        if not colors:
            raise ValueError("`palette` is empty.")
        return {k: mcolors.to_hex(colors[i % len(colors)]) for i, k in enumerate(keys)}
    given = {str(k): mcolors.to_hex(v) for k, v in (palette or {}).items()}
    out: dict[str, str] = {}
    for k in keys:
        if k in given:
            out[k] = given[k]
        elif palette is None and k in KEY_COLORS:
            out[k] = KEY_COLORS[k]
    used = set(out.values())
    spare = [c for c in PALETTE if c not in used] or list(PALETTE)
    i = 0
    for k in keys:
        if k not in out:
            out[k] = spare[i % len(spare)]
            i += 1
    return {k: mcolors.to_hex(out[k]) for k in keys}


def _as_keys(keys) -> list[str] | None:
    if keys is None:
        return None
    return [keys] if isinstance(keys, str) else [str(k) for k in keys]


def _compare_table(data, keys, *, per_cell: bool = False, **kwargs) -> tuple[pd.DataFrame, list[str]]:
    """Return the tidy table of :func:`gsn.tl.compare` and the keys to draw, in order."""
    keys = _as_keys(keys)
    if isinstance(data, pd.DataFrame):
        missing = [c for c in COMPARE_COLUMNS if c not in data.columns]
        if missing:
            raise ValueError(f"Not a table of `gsn.tl.compare`: it has no column(s) {missing}.")
        if kwargs:
            raise TypeError(f"{sorted(kwargs)} only apply when `data` is a SpatialData object.")
        col = data["key"]
        if isinstance(col.dtype, pd.CategoricalDtype):
            present = set(col.astype(str))
            available = [str(c) for c in col.cat.categories if str(c) in present]
        else:
            available = [str(c) for c in pd.unique(col)]
        if keys is None:
            keys = available
        unknown = [k for k in keys if k not in available]
        if unknown:
            raise KeyError(f"No rows for key(s) {unknown} in the table; it holds {available}.")
        table = data
    elif isinstance(data, sd.SpatialData):
        from ..tl import compare as tl_compare

        if keys is None:
            keys = _segmentation_keys(data)
            if not keys:
                raise ValueError("No segmentation to compare: the object has no `<key>_labels` element.")
        table = tl_compare(data, keys, per_cell=per_cell, **kwargs)
    else:
        raise TypeError(
            f"Expected the DataFrame of `gsn.tl.compare` or a SpatialData object, got {type(data).__name__}."
        )
    if not keys:
        raise ValueError("No segmentation key to plot.")
    key_col = table["key"].astype(str)
    table = table[key_col.isin(keys)].assign(key=key_col[key_col.isin(keys)])
    return table, keys


def _rows(table: pd.DataFrame, key: str, metric: str, stat: str) -> pd.DataFrame:
    sel = table[(table["key"] == key) & (table["metric"] == metric) & (table["stat"] == stat)]
    return sel.sort_values("level", kind="stable")


def _has(table: pd.DataFrame, metric: str, stat: str) -> bool:
    return bool(((table["metric"] == metric) & (table["stat"] == stat)).any())


def _require(table: pd.DataFrame, metric: str, stat: str, why: str) -> None:
    if not _has(table, metric, stat):
        raise ValueError(f"The table has no {metric!r} rows with stat {stat!r}: {why}")


def _scalar(table: pd.DataFrame, key: str, metric: str, stat: str) -> float:
    rows = _rows(table, key, metric, stat)
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def _own_layout(fig, user_ax: bool) -> None:
    if not user_ax:
        fig.set_layout_engine("constrained")


def _legend(ax: Axes, **kwargs) -> None:
    ax.legend(fontsize="small", frameon=False, **kwargs)


# --------------------------------------------------------------------------------------------------
# panel drawers (one Axes each)
# --------------------------------------------------------------------------------------------------
def _bar_labels(values: np.ndarray, fmt: str) -> list[str]:
    return [format(v, fmt) if np.isfinite(v) else ("inf" if np.isinf(v) else "") for v in values]


def _draw_scalar_bars(ax: Axes, table, keys, colors, metric, stat, *, ylabel, title, fmt, legend=False) -> None:
    values = np.array([_scalar(table, k, metric, stat) for k in keys])
    heights = np.where(np.isfinite(values), values, np.nan)
    bars = ax.bar(np.arange(len(keys)), heights, color=[colors[k] for k in keys], width=0.7)
    for bar, key in zip(bars, keys, strict=True):
        bar.set_label(key)
    ax.bar_label(bars, labels=_bar_labels(values, fmt), fontsize="small", padding=2)
    ax.set_xticks(np.arange(len(keys)), keys, rotation=30 if len(keys) > 3 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.12)
    if legend:
        _legend(ax)


def _draw_cell_calling(ax: Axes, table, keys, colors, *, annotate=True, legend=True) -> None:
    _require(table, "cell_calling", "ratio", "cell calling needs transcripts.")
    deltas = np.sort(table.loc[(table["metric"] == "cell_calling") & (table["stat"] == "ratio"), "level"].unique())
    x = np.arange(len(deltas))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        rows = _rows(table, key, "cell_calling", "ratio").set_index("level")["value"].reindex(deltas)
        values = rows.to_numpy(dtype=float)
        bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, np.where(np.isfinite(values), values, np.nan), width,
                      color=colors[key], label=key)  # fmt: skip
        if annotate:
            ax.bar_label(bars, labels=_bar_labels(values, ".2f"), fontsize="x-small", padding=1)
    ax.set_xticks(x, [f"{d:g}" for d in deltas])
    ax.set_xlabel("distance δ from cells (px)")
    ax.set_ylabel("cell calling $|g_{in}| / |g_{out}(δ)|$")
    ax.set_title("Cell calling")
    ax.margins(y=0.12)
    if legend:
        _legend(ax)


def _fmt_edge(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e7:
        return str(int(v))
    return f"{v:.3g}"


def _draw_coverage(ax: Axes, table, keys, colors, *, metric, legend=True) -> None:
    what = "pixels" if metric == "pixel_coverage" else "transcripts"
    overall_metric = "pixels_in_cells" if metric == "pixel_coverage" else "transcripts_in_cells"
    needs = "an image" if what == "pixels" else "an image and transcripts"
    _require(table, metric, "fraction", f"coverage curves need {needs}.")
    sel = table[(table["metric"] == metric) & (table["stat"] == "fraction")]
    bins = sel.drop_duplicates("level").sort_values("level")[["level", "lower", "upper"]]
    for key in keys:
        rows = _rows(table, key, metric, "fraction")
        overall = _scalar(table, key, overall_metric, "fraction")
        label = key if not np.isfinite(overall) else f"{key} ({overall:.0%} overall)"
        ax.plot(rows["level"].to_numpy() + 0.5, rows["value"].to_numpy(), marker="o", ms=3.5, color=colors[key],
                label=label)  # fmt: skip
    levels = bins["level"].to_numpy()
    edges = [*bins["lower"].to_numpy(), bins["upper"].to_numpy()[-1]] if len(bins) else []
    ax.set_xticks(np.r_[levels, levels[-1] + 1] if len(levels) else [], [_fmt_edge(e) for e in edges],
                  rotation=45, ha="right", rotation_mode="anchor", fontsize="small")  # fmt: skip
    ax.set_xlim(levels.min() if len(levels) else 0, levels.max() + 1 if len(levels) else 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="x", color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    if what == "pixels":
        ax.set_xlabel("pixel value (quantile bins)")
        ax.set_ylabel("fraction of pixels in cells")
        ax.set_title("Pixels in cells by pixel value")
    else:
        ax.set_xlabel("pixel value under the transcript (bins)")
        ax.set_ylabel("fraction of transcripts in cells")
        ax.set_title("Transcripts in cells by pixel value")
    if legend:
        _legend(ax, loc="upper left")


def _per_cell(table, key, metric) -> np.ndarray:
    values = _rows(table, key, metric, "cell")["value"].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _draw_genes_per_cell(ax: Axes, table, keys, colors, *, bins=30, legend=True) -> None:
    _require(table, "n_genes", "cell", "the histogram needs per-cell rows: `gsn.tl.compare(..., per_cell=True)`.")
    values = {k: _per_cell(table, k, "n_genes") for k in keys}
    if isinstance(bins, int):
        top = max((v.max() for v in values.values() if len(v)), default=0.0)
        step = max(1, int(np.ceil((top + 1) / bins)))
        edges = np.arange(0, top + step + 1, step) - 0.5
    else:
        edges = np.asarray(bins, dtype=float)
    for key in keys:
        counts, _ = np.histogram(values[key], edges)
        med = np.median(values[key]) if len(values[key]) else np.nan
        ax.stairs(counts, edges, color=colors[key], lw=1.6, label=f"{key} (median {med:g})")
    ax.set_xlabel("genes detected per cell")
    ax.set_ylabel("cells")
    ax.set_title("Genes detected per cell")
    ax.set_xlim(edges[0], edges[-1])
    if legend:
        _legend(ax)


def _violin_stats(values: np.ndarray, log: bool) -> dict | None:
    from scipy.stats import gaussian_kde

    v = np.log10(values) if log else values
    if len(v) < 2 or np.ptp(v) == 0:
        return None
    try:
        kde = gaussian_kde(v)
    except (np.linalg.LinAlgError, ValueError):  # pragma: no cover - degenerate data
        return None
    coords = np.linspace(v.min(), v.max(), 120)
    vals = kde(coords)
    if log:
        coords = 10.0**coords
    med = float(np.median(values))
    return {"coords": coords, "vals": vals, "mean": float(values.mean()), "median": med,
            "min": float(values.min()), "max": float(values.max())}  # fmt: skip


def _draw_distribution(ax: Axes, table, keys, colors, *, metric, log=None, violin=True, legend=False) -> None:
    _require(table, metric, "median", f"per-cell metric {metric!r} is missing.")
    cells = {k: _per_cell(table, k, metric) for k in keys}
    if log is None:
        log = (
            metric in LOG_METRICS
            and all((v > 0).all() for v in cells.values())
            and all(_scalar(table, k, metric, "q05") > 0 for k in keys)
        )
    boxes = []
    for i, key in enumerate(keys):
        stats = {s: _scalar(table, key, metric, s) for s in ("mean", "q05", "q25", "median", "q75", "q95")}
        boxes.append({"med": stats["median"], "q1": stats["q25"], "q3": stats["q75"], "whislo": stats["q05"],
                      "whishi": stats["q95"], "mean": stats["mean"], "label": key})  # fmt: skip
        vs = _violin_stats(cells[key], log) if violin and len(cells[key]) else None
        if vs is not None:
            parts = ax.violin([vs], positions=[i], widths=0.8, showmeans=False, showextrema=False, showmedians=False)
            for body in parts["bodies"]:
                body.set_facecolor(colors[key])
                body.set_edgecolor(colors[key])
                body.set_alpha(0.35)
    drawn = ax.bxp(boxes, positions=np.arange(len(keys)), widths=0.2, showfliers=False, patch_artist=True,
                   boxprops={"edgecolor": "black", "linewidth": 0.8}, whiskerprops={"linewidth": 0.8},
                   capprops={"linewidth": 0.8}, medianprops={"color": "white", "linewidth": 1.5})  # fmt: skip
    for patch, key in zip(drawn["boxes"], keys, strict=True):
        patch.set_facecolor(colors[key])
    if log:
        ax.set_yscale("log")
    ax.set_xticks(np.arange(len(keys)), keys, rotation=30 if len(keys) > 3 else 0)
    ax.set_xlim(-0.6, len(keys) - 0.4)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(METRIC_TITLES.get(metric, metric))
    if legend:
        ax.legend(handles=[Patch(color=colors[k], label=k) for k in keys], fontsize="small", frameon=False)


# --------------------------------------------------------------------------------------------------
# public panel functions
# --------------------------------------------------------------------------------------------------
def cell_calling(
    data: pd.DataFrame | sd.SpatialData,
    *,
    keys: str | Sequence[str] | None = None,
    annotate: bool = True,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Cell calling scores ``|g_in| / |g_out(δ)|`` per distance δ, one bar per segmentation (Fig. 2c).

    Higher is better: more molecules inside cells per molecule just outside them.

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare`, or a SpatialData object from which it is computed.
    keys
        Segmentation prefixes to show, in order; default all in ``data`` (every labels element of a
        SpatialData object).
    annotate
        Write each score above its bar (``inf`` where no molecule lies just outside the cells).
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        Axes to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object (``deltas``, ``points_key``, ...).

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes.
    """
    table, keys = _compare_table(data, keys, **kwargs)
    fig, axes = make_axes(1, ax, panel_size=(4.5, 3.6))
    _own_layout(fig, ax is not None)
    _draw_cell_calling(axes[0], table, keys, key_colors(keys, palette), annotate=annotate)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


def _coverage(metric, data, keys, palette, ax, show, return_fig, kwargs):
    table, keys = _compare_table(data, keys, **kwargs)
    fig, axes = make_axes(1, ax, panel_size=(4.5, 3.8))
    _own_layout(fig, ax is not None)
    _draw_coverage(axes[0], table, keys, key_colors(keys, palette), metric=metric)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


def pixel_coverage(
    data: pd.DataFrame | sd.SpatialData,
    *,
    keys: str | Sequence[str] | None = None,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Fraction of pixels inside cells per level of nucleus-image value (Fig. 2d).

    Pixels are grouped into the quantile bins of :func:`gsn.tl.pixel_coverage`; the x ticks are the
    bin edges (pixel values) and each point sits in its bin. A good segmentation covers the bright
    pixels. The legend gives each segmentation's overall fraction of pixels in cells.

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare`, or a SpatialData object from which it is computed.
    keys
        Segmentation prefixes to show, in order; default all in ``data``.
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        Axes to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object (``bins``, ``image_key``, ...).

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes.
    """
    return _coverage("pixel_coverage", data, keys, palette, ax, show, return_fig, kwargs)


def rna_coverage(
    data: pd.DataFrame | sd.SpatialData,
    *,
    keys: str | Sequence[str] | None = None,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Fraction of transcripts inside cells per level of the nucleus-image value under them (Fig. 2e).

    Transcripts are grouped into the quantile bins of :func:`gsn.tl.rna_coverage`; the x ticks are
    the bin edges (pixel values). A segmentation that uses RNA keeps molecules in dim cytoplasm too.
    The legend gives each segmentation's overall fraction of transcripts in cells.

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare`, or a SpatialData object from which it is computed.
    keys
        Segmentation prefixes to show, in order; default all in ``data``.
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        Axes to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes.
    """
    return _coverage("rna_coverage", data, keys, palette, ax, show, return_fig, kwargs)


def genes_per_cell(
    data: pd.DataFrame | sd.SpatialData,
    *,
    keys: str | Sequence[str] | None = None,
    bins: int | Sequence[float] = 30,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Histogram of the number of genes detected per cell, one outline per segmentation (Fig. 2f).

    A gene is detected in a cell when it has at least one read there. The per-cell numbers are the
    ``stat == "cell"`` rows of :func:`gsn.tl.compare` with ``per_cell=True`` (computed that way for a
    SpatialData object).

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare` with ``per_cell=True``, or a SpatialData object.
    keys
        Segmentation prefixes to show, in order; default all in ``data``.
    bins
        Number of bins (of whole numbers of genes, shared by all segmentations) or explicit bin edges.
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        Axes to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes.
    """
    table, keys = _compare_table(data, keys, per_cell=True, **kwargs)
    fig, axes = make_axes(1, ax, panel_size=(4.5, 3.6))
    _own_layout(fig, ax is not None)
    _draw_genes_per_cell(axes[0], table, keys, key_colors(keys, palette), bins=bins)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


def morphology(
    data: pd.DataFrame | sd.SpatialData,
    metric: str | Sequence[str] = ("area", "elongation", "convexity"),
    *,
    keys: str | Sequence[str] | None = None,
    log: bool | None = None,
    violin: bool = True,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Distributions of per-cell morphology, one violin and box per segmentation (Fig. 2g-i).

    The box spans the quartiles with the median as a white line, the whiskers reach the 5th and 95th
    percentiles: these are the summary rows of :func:`gsn.tl.compare`. The violin (a Gaussian kernel
    density, in log space on a log axis) is drawn when the table holds per-cell rows
    (``per_cell=True``, the default for a SpatialData object).

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare`, or a SpatialData object from which it is computed.
    metric
        ``"area"`` (pixels), ``"elongation"``, ``"convexity"``, ``"perimeter"``, ``"n_genes"`` or
        ``"n_transcripts"``, or several of them (one panel each).
    keys
        Segmentation prefixes to show, in order; default all in ``data``.
    log
        Log axis; by default for ``area`` and ``n_transcripts``.
    violin
        Draw the violins when per-cell values are available.
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        One Axes per metric to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes (a list for several metrics).
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise ValueError(f"Unknown morphology metric(s) {unknown}; choose from {list(METRIC_LABELS)}.")
    table, keys = _compare_table(data, keys, per_cell=True, **kwargs)
    fig, axes = make_axes(len(metrics), ax, panel_size=(max(2.2, 0.9 * len(keys) + 1.4), 3.6))
    _own_layout(fig, ax is not None)
    colors = key_colors(keys, palette)
    for m, panel in zip(metrics, axes, strict=True):
        _draw_distribution(panel, table, keys, colors, metric=m, log=log, violin=violin)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


# --------------------------------------------------------------------------------------------------
# gene-gene correlation reproducibility (Fig. 2j)
# --------------------------------------------------------------------------------------------------
def _is_compare_table(obj) -> bool:
    return isinstance(obj, pd.DataFrame) and all(c in obj.columns for c in COMPARE_COLUMNS)


def _sample_items(samples) -> dict[str, object]:
    if isinstance(samples, Mapping):
        items = {str(k): v for k, v in samples.items()}
    elif isinstance(samples, Sequence) and not isinstance(samples, str):
        items = {f"sample {i + 1}": v for i, v in enumerate(samples)}
    else:
        raise TypeError(
            "Pass the samples as a list or dict of SpatialData, AnnData or gene-gene correlation DataFrames, "
            "or the table of `gsn.tl.compare`."
        )
    if len(items) < 2:
        raise ValueError(f"Reproducibility needs at least two samples, got {len(items)}.")
    for name, item in items.items():
        if not isinstance(item, sd.SpatialData | ad.AnnData | pd.DataFrame):
            raise TypeError(f"Sample {name!r} is a {type(item).__name__}, not a SpatialData, AnnData or DataFrame.")
    return items


def _sample_keys(items: Mapping[str, object], keys) -> list[str | None]:
    keys = _as_keys(keys)
    spatial = [v for v in items.values() if isinstance(v, sd.SpatialData)]
    if not spatial:
        return keys or [None]
    if len(spatial) != len(items):
        raise TypeError("Mix of SpatialData and other samples; pass the same kind for every sample.")
    if keys is None:
        from ..tl._metrics import get_table

        def with_table(s):
            out = []
            for k in _segmentation_keys(s):
                try:
                    get_table(s, k)
                except KeyError:
                    continue
                out.append(k)
            return out

        common = [k for k in with_table(spatial[0]) if all(k in with_table(s) for s in spatial[1:])]
        if not common:
            raise ValueError("The samples share no segmentation with a table; run `gsn.tl.cells_from_labels` first.")
        keys = common
    return keys


def _correlations(items, key, corr_kwargs) -> dict[str, pd.DataFrame]:
    from ..tl import gene_correlation

    out = {}
    for name, item in items.items():
        out[name] = item if isinstance(item, pd.DataFrame) else gene_correlation(item, key, **corr_kwargs)
    return out


def _shared_pairs(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    shared = a.index.intersection(b.index, sort=False)
    iu = np.triu_indices(len(shared), 1)
    va = a.loc[shared, shared].to_numpy()[iu]
    vb = b.loc[shared, shared].to_numpy()[iu]
    ok = np.isfinite(va) & np.isfinite(vb)
    return va[ok], vb[ok]


def correlation_reproducibility(
    samples,
    keys: str | Sequence[str] | None = None,
    *,
    kind: str | None = None,
    min_genes: int = 5,
    min_cell_fraction: float = 0.05,
    exclude: str | Sequence[str] | None = None,
    layer: str | None = None,
    max_points: int = 20_000,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Reproducibility of gene-gene correlations between replicate samples (Fig. 2j).

    ``kind="scatter"`` (the default for two samples): for every pair of genes both samples kept, its
    correlation in the first sample against that in the second, one panel per segmentation, with the
    reproducibility ``r`` (:func:`gsn.tl.correlation_reproducibility`) in the title. Points on the
    diagonal reproduce exactly. ``kind="bar"`` (the default for a compare table or more than two
    samples): one bar per segmentation with ``r`` (the median over pairs of samples).

    Parameters
    ----------
    samples
        Two or more samples as a list or dict (names become axis labels) of SpatialData objects
        (their ``<key>_table`` is used for every key), AnnData count tables, or the gene-gene correlation
        DataFrames of :func:`gsn.tl.gene_correlation`; or the table of :func:`gsn.tl.compare` with
        ``correlation_reproducibility`` rows (``groupby=``).
    keys
        Segmentation prefixes; default every segmentation with a table in all samples. For AnnData or
        DataFrame samples, a single name used as the panel's label.
    kind
        ``"scatter"`` or ``"bar"``.
    min_genes, min_cell_fraction, exclude, layer
        Filters of :func:`gsn.tl.gene_correlation` (paper: ``min_genes=30`` for CosMx, 5 for ISS).
    max_points
        Draw at most this many gene pairs per panel (an even, seeded subsample); ``r`` uses all.
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        Axes to draw into: one per segmentation for the scatter, one for the bars.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes (a list for several scatter panels).

    Examples
    --------
    >>> fovs = {"FOV 2": sdata_fov2, "FOV 3": sdata_fov3}  # doctest: +SKIP
    >>> gsn.pl.correlation_reproducibility(fovs, ["prior", "watershed"], min_genes=30)  # doctest: +SKIP
    """
    if kind not in (None, "scatter", "bar"):
        raise ValueError(f"`kind` must be 'scatter' or 'bar', got {kind!r}.")
    corr_kwargs = {"min_genes": min_genes, "min_cell_fraction": min_cell_fraction, "exclude": exclude, "layer": layer}
    if _is_compare_table(samples):
        if kind == "scatter":
            raise ValueError("A compare table holds only the reproducibility values; the scatter needs the samples.")
        table, keys = _compare_table(samples, keys)
        _require(table, "correlation_reproducibility", "median", "run `gsn.tl.compare(..., groupby=...)`.")
        keys = [k for k in keys if np.isfinite(_scalar(table, k, "correlation_reproducibility", "median"))] or keys
        return _reproducibility_bars(table, keys, palette, ax, show, return_fig)
    items = _sample_items(samples)
    key_list = _sample_keys(items, keys)
    labels = [k if k is not None else "counts" for k in key_list]
    kind = kind or ("scatter" if len(items) == 2 else "bar")
    if kind == "bar":
        from ..tl import correlation_reproducibility as tl_repro

        frames = []
        for key, label in zip(key_list, labels, strict=True):
            r = tl_repro(items, key, **corr_kwargs)
            frames.append({"key": label, "metric": "correlation_reproducibility", "stat": "median", "level": np.nan,
                           "lower": np.nan, "upper": np.nan, "value": r})  # fmt: skip
        table = pd.DataFrame.from_records(frames, columns=list(COMPARE_COLUMNS))
        return _reproducibility_bars(table, labels, palette, ax, show, return_fig)
    if len(items) != 2:
        raise ValueError(f"The scatter compares two samples, got {len(items)}; use `kind='bar'`.")
    from ..tl._correlation import correlation_of_correlations

    (name_a, name_b) = items
    colors = key_colors(labels, palette)
    fig, axes = make_axes(len(key_list), ax, panel_size=(3.8, 3.8))
    _own_layout(fig, ax is not None)
    rng = np.random.default_rng(0)
    lo, hi = np.inf, -np.inf
    for key, label, panel in zip(key_list, labels, axes, strict=True):
        corrs = _correlations(items, key, corr_kwargs)
        a, b = corrs[name_a], corrs[name_b]
        r, n_genes, n_pairs = correlation_of_correlations(a, b)
        va, vb = _shared_pairs(a, b)
        if len(va) > max_points:
            pick = np.sort(rng.choice(len(va), max_points, replace=False))
            va, vb = va[pick], vb[pick]
        panel.scatter(va, vb, s=3, alpha=0.3, color=colors[label], linewidths=0, rasterized=True)
        if len(va):
            lo, hi = min(lo, va.min(), vb.min()), max(hi, va.max(), vb.max())
        panel.set_title(f"{label}: r = {r:.3f}" if key is not None or keys is not None else f"r = {r:.3f}")
        panel.text(0.97, 0.03, f"{n_pairs:,} gene pairs\n{n_genes} genes", transform=panel.transAxes, ha="right",
                   va="bottom", fontsize="small", color="0.3")  # fmt: skip
        panel.set_xlabel(f"gene-gene correlation, {name_a}")
        panel.set_ylabel(f"gene-gene correlation, {name_b}")
    if not np.isfinite(lo):
        lo, hi = -1.0, 1.0
    pad = 0.04 * max(hi - lo, 1e-3)
    for panel in axes:
        panel.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.8, color="0.5", zorder=0)
        panel.set_xlim(lo - pad, hi + pad)
        panel.set_ylim(lo - pad, hi + pad)
        panel.set_aspect("equal")
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


def _reproducibility_bars(table, keys, palette, ax, show, return_fig):
    fig, axes = make_axes(1, ax, panel_size=(max(2.4, 0.9 * len(keys) + 1.4), 3.6))
    _own_layout(fig, ax is not None)
    _draw_scalar_bars(axes[0], table, keys, key_colors(keys, palette), "correlation_reproducibility", "median",
                      ylabel="reproducibility r", title=REPRO_TITLE, fmt=".3f")  # fmt: skip
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)


# --------------------------------------------------------------------------------------------------
# the whole figure
# --------------------------------------------------------------------------------------------------
def compare(
    data: pd.DataFrame | sd.SpatialData,
    keys: str | Sequence[str] | None = None,
    *,
    panels: Sequence[str] | None = None,
    replicates: Sequence[sd.SpatialData] | Mapping[str, sd.SpatialData] | None = None,
    correlation_kwargs: Mapping | None = None,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """All Fig. 2-style panels for several segmentations of the same data, in one figure.

    Panels (see :data:`PANELS`): number of cells, cell calling (2c), pixel and RNA coverage by pixel
    value (2d, 2e), genes detected per cell (2f), area, elongation and convexity (2g-i), and, when
    the table has ``correlation_reproducibility`` rows or ``replicates`` are given, gene-gene
    correlation reproducibility (2j). Panels without data in the table (coverage curves without an
    image, the histogram without per-cell rows) are left out unless asked for in ``panels``. One
    legend, at the top, gives each segmentation's colour.

    Parameters
    ----------
    data
        The tidy DataFrame of :func:`gsn.tl.compare` (with ``per_cell=True`` for the histogram and the
        violins), or a SpatialData object from which it is computed with ``per_cell=True``.
    keys
        Segmentation prefixes to show, in order; default all in ``data``.
    panels
        Names from :data:`PANELS` to draw, in order.
    replicates
        Replicate samples (SpatialData objects segmented with the same keys) for the reproducibility
        panel: ``r`` between ``data`` (which must then be a SpatialData object) and each replicate, the
        median over pairs for several.
    correlation_kwargs
        Filters of :func:`gsn.tl.gene_correlation` for ``replicates`` (``min_genes``, ``min_cell_fraction``,
        ``exclude``).
    palette
        Colours of the keys, see :func:`key_colors`.
    ax
        One Axes per panel to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.
    **kwargs
        Passed to :func:`gsn.tl.compare` when ``data`` is a SpatialData object.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the list of Axes.

    Examples
    --------
    >>> gsn.pl.compare(sdata, ["prior", "watershed", "genesegnet"])  # doctest: +SKIP
    """
    table, keys = _compare_table(data, keys, per_cell=True, **kwargs)
    if replicates is not None:
        if not isinstance(data, sd.SpatialData):
            raise TypeError("`replicates` needs `data` to be the SpatialData object (its tables are compared).")
        from ..tl import correlation_reproducibility as tl_repro

        reps = list(replicates.values()) if isinstance(replicates, Mapping) else list(replicates)
        rows = []
        for key in keys:
            r = tl_repro([data, *reps], key, **dict(correlation_kwargs or {}))
            rows.append({"key": key, "metric": "correlation_reproducibility", "stat": "median", "level": np.nan,
                         "lower": np.nan, "upper": np.nan, "value": r})  # fmt: skip
        table = table[table["metric"] != "correlation_reproducibility"]
        table = pd.concat([table.astype({"key": str}), pd.DataFrame(rows)], ignore_index=True)
    if panels is None:
        panels = [p for p in PANELS if _has(table, *_PANEL_METRIC[p])]
    else:
        panels = list(panels)
        unknown = [p for p in panels if p not in PANELS]
        if unknown:
            raise ValueError(f"Unknown panel(s) {unknown}; choose from {list(PANELS)}.")
    if not panels:
        raise ValueError("Nothing to plot: the table has none of the panels' metrics.")
    colors = key_colors(keys, palette)
    n = len(panels)
    ncols = int(np.ceil(n / np.ceil(n / 4)))
    fig, axes = make_axes(n, ax, panel_size=(4.0, 3.5), ncols=ncols)
    user_ax = ax is not None
    _own_layout(fig, user_ax)
    for name, panel in zip(panels, axes, strict=True):
        if name == "n_cells":
            _draw_scalar_bars(panel, table, keys, colors, "n_cells", "value", ylabel="cells", title="Cells", fmt=".0f")
        elif name == "cell_calling":
            _draw_cell_calling(panel, table, keys, colors, annotate=len(keys) <= 3, legend=False)
        elif name in ("pixel_coverage", "rna_coverage"):
            _draw_coverage(panel, table, keys, colors, metric=name, legend=False)
        elif name == "genes_per_cell":
            _draw_genes_per_cell(panel, table, keys, colors, legend=False)
        elif name == "correlation_reproducibility":
            _draw_scalar_bars(panel, table, keys, colors, "correlation_reproducibility", "median",
                              ylabel="reproducibility r", title=REPRO_TITLE, fmt=".3f")  # fmt: skip
        else:
            _draw_distribution(panel, table, keys, colors, metric=name)
    handles = [Patch(color=colors[k], label=k) for k in keys]
    if user_ax:
        axes[0].legend(handles=handles, fontsize="small", frameon=False)
    else:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(keys), frameon=False)
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=user_ax)
