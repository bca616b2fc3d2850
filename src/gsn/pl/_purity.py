"""Transcripts in cells against purity (MECR), with nuclei expansion as the reference curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import spatialdata as sd
from matplotlib.axes import Axes

from .._logging import logger
from ._metrics import key_colors
from ._utils import finish, make_axes


def purity(
    sdata: sd.SpatialData,
    keys: str | Sequence[str],
    *,
    reference: str | None = "prior_labels",
    markers: Mapping[str, Sequence[str]] | None = None,
    distances: Sequence[float] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15),
    points_key: str | None = None,
    palette: Mapping[str, str] | Sequence[str] | str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Fraction of transcripts in cells against MECR: one point per segmentation, nuclei expansion as a curve.

    A segmentation is better than expanding the nuclei when its point lies below the curve (purer
    cells at the same fraction of transcripts in cells) and to its right (more transcripts).

    Parameters
    ----------
    sdata
        SpatialData object.
    keys
        Segmentation prefixes (or labels elements) to place as points.
    reference
        Nucleus labels expanded by ``distances`` to draw the reference curve
        (:func:`gsn.tl.expansion_curve`); ``None`` draws no curve.
    markers
        ``{cell type: [genes]}`` shared by every point and the curve. By default derived once from
        the cells of ``reference`` (else of the first key) with :func:`gsn.tl.marker_genes`.
    distances
        Expansion distances of the curve in microns (pixels when the pixel size is unknown).
    points_key
        Transcripts element.
    palette
        Colours of the keys, see :func:`gsn.pl.key_colors`.
    ax
        Axes to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes.

    Examples
    --------
    >>> import gsn
    >>> sdata = gsn.datasets.synthetic(shape=(128, 128), seed=0)
    >>> gsn.tl.grow_cells(sdata, "prior_labels")
    >>> ax = gsn.pl.purity(sdata, ["prior_grown"], show=False)
    """
    from ..tl import expansion_curve, marker_genes
    from ..tl import purity as purity_table

    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("`keys` is empty: give at least one segmentation to place.")
    if markers is None:
        source = reference if reference is not None else keys[0]
        markers = marker_genes(sdata, source, points_key=points_key)
        logger.info("purity: markers derived from the cells of %r: %s", source, markers)
    curve = None
    if reference is not None:
        curve = expansion_curve(sdata, reference, markers, distances=distances, points_key=points_key)
    table = purity_table(sdata, keys, markers, points_key=points_key)
    colors = key_colors(keys, palette)

    fig, axes = make_axes(1, ax, panel_size=(5.0, 4.0))
    a = axes[0]
    if curve is not None:
        a.plot(curve["transcripts_in_cells"], curve["mecr"], "-o", color="0.55", ms=3, lw=1.2, zorder=1,
               label=f"{reference} expanded")  # fmt: skip
        for d, fx, fy in zip(curve["distance"], curve["transcripts_in_cells"], curve["mecr"], strict=True):
            if d in (0, 5, 10, 15) or d == curve["distance"].iloc[-1]:
                a.annotate(f"{d:g}", (fx, fy), textcoords="offset points", xytext=(0, -11), ha="center",
                           fontsize=7, color="0.4")  # fmt: skip
    for _, row in table.iterrows():
        a.scatter(row["transcripts_in_cells"], row["mecr"], s=60, color=colors[row["key"]], edgecolor="black",
                  linewidth=0.6, zorder=3, label=row["key"])  # fmt: skip
    values = np.concatenate([table["mecr"].to_numpy(), [] if curve is None else curve["mecr"].to_numpy()])
    if np.isfinite(values).any():
        lo, hi = np.nanmin(values), np.nanmax(values)
        pad = 0.1 * (hi - lo) if hi > lo else 0.01
        a.set_ylim(lo - pad, hi + pad)
    a.set_xlabel("fraction of transcripts in cells")
    a.set_ylabel("MECR (lower is purer)")
    a.set_title("Transcripts in cells vs purity" + ("\n(curve: expansion, µm)" if curve is not None else ""))
    a.legend(fontsize=8, frameon=False, loc="best")
    if ax is None:
        fig.tight_layout()
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)
