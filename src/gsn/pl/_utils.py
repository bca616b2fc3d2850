"""Conventions shared by every plot: ``ax``/``show``/``return_fig`` as in scanpy."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def make_axes(n: int, ax: Axes | Sequence[Axes] | None, *, panel_size=(4.0, 4.0), ncols: int | None = None):
    """Return ``(fig, axes)`` with ``n`` axes: the user's, or a new grid."""
    if ax is not None:
        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(ax))
        if len(axes) != n:
            raise ValueError(f"This plot needs {n} axes; `ax` gave {len(axes)}.")
        return axes[0].figure, axes
    ncols = ncols or min(n, 4)
    nrows = int(np.ceil(n / ncols))
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.set_visible(False)
    return fig, axes[:n]


def finish(fig: Figure, axes: list[Axes], *, show: bool | None, return_fig: bool, user_ax: bool):
    """Scanpy's ending: the figure if asked, else show it (default when gsn made it), else the Axes."""
    if return_fig:
        return fig
    if show is None:
        show = not user_ax and plt.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo")
    if show:
        plt.show()
        return None
    return axes[0] if len(axes) == 1 else axes
