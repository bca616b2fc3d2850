"""Segmentation overlays: image, cell outlines and transcripts inside/outside cells (Fig. 2a-b)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import spatialdata as sd
from matplotlib.axes import Axes
from skimage.segmentation import find_boundaries
from spatialdata.transformations import get_transformation

from .._constants import Key
from .._elements import get_single_channel
from .._transcripts import transcripts_to_pixels
from ..pp._normalize import normalize_array
from ._utils import finish, make_axes

INSIDE_COLOR = "#e8b41c"
OUTSIDE_COLOR = "#2ec4e6"
BOUNDARY_COLOR = (1.0, 0.25, 0.25)


def pixel_size_um(element) -> float | None:
    """Microns per pixel when the element has an isotropic scale (no rotation) to ``"global"``."""
    t = get_transformation(element, get_all=True).get("global")
    if t is None:
        return None
    m = t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    if abs(m[0, 1]) > 1e-9 or abs(m[1, 0]) > 1e-9 or not np.isclose(m[0, 0], m[1, 1]):
        return None
    return float(m[0, 0])


def _segmentation_keys(sdata: sd.SpatialData) -> list[str]:
    return sorted(Key.prefix(k) for k in sdata.labels if k.endswith("_labels"))


def _region_of_cell(labels: np.ndarray, cell_id: int, margin: int) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(labels == cell_id)
    if rows.size == 0:
        raise KeyError(f"Cell {cell_id} is not in the labels.")
    h, w = labels.shape
    return (max(int(cols.min()) - margin, 0), max(int(rows.min()) - margin, 0),
            min(int(cols.max()) + 1 + margin, w), min(int(rows.max()) + 1 + margin, h))  # fmt: skip


def add_scale_bar(ax: Axes, um_per_px: float, width_px: float) -> None:
    """Scale bar of a round length (1, 2, 5 x 10^k um) about a fifth of the panel width."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    target = width_px * um_per_px / 5
    base = 10 ** np.floor(np.log10(target))
    length = max(m * base for m in (1, 2, 5) if m * base <= target) if target >= base else base
    bar = AnchoredSizeBar(ax.transData, length / um_per_px, f"{length:g} µm", "lower right", pad=0.4, color="white",
                          frameon=False, size_vertical=max(width_px / 150, 1))  # fmt: skip
    ax.add_artist(bar)


def segmentation(
    sdata: sd.SpatialData,
    keys: str | Sequence[str] | None = None,
    *,
    image_key: str | None = None,
    points_key: str | None = None,
    channel: str | int | None = None,
    region: tuple[int, int, int, int] | None = None,
    cell_id: int | None = None,
    margin: int = 30,
    transcripts: bool = True,
    point_size: float = 3.0,
    max_points: int = 100_000,
    scale_bar: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Show the image with the cell outlines of one or several segmentations, one panel each.

    Transcripts are drawn in two colours: inside a cell of that panel's segmentation, or outside
    (as in Fig. 2a-b of the GeneSegNet paper).

    Parameters
    ----------
    sdata
        SpatialData object with the image, labels and transcripts.
    keys
        Segmentation prefixes (``"genesegnet"`` for ``genesegnet_labels``); default every labels element.
    image_key, points_key, channel
        Elements to draw; may be omitted when unambiguous.
    region
        ``(x0, y0, x1, y1)`` window in image pixels; default the whole image.
    cell_id
        Zoom on this cell of the first segmentation instead (``margin`` pixels around it).
    margin
        Context around ``cell_id`` in pixels.
    transcripts
        Draw transcripts.
    point_size
        Marker size of transcripts.
    max_points
        Draw at most this many transcripts per panel (an even, seeded subsample).
    scale_bar
        Draw a scale bar in microns when the image has a pixel size (a scale to ``"global"``).
    ax
        One Axes per segmentation to draw into.
    show
        Show the figure; by default when gsn made the figure and the backend is interactive.
    return_fig
        Return the Figure instead of the Axes.

    Returns
    -------
    The Figure if ``return_fig``, None if shown, else the Axes (a list for several panels).
    """
    keys = _segmentation_keys(sdata) if keys is None else ([keys] if isinstance(keys, str) else list(keys))
    if not keys:
        raise ValueError("No segmentation to show: the object has no `<key>_labels` element.")
    missing = [k for k in keys if Key.labels(k) not in sdata.labels]
    if missing:
        raise KeyError(f"No labels element for {missing}; available segmentations: {_segmentation_keys(sdata)}.")
    image_key, image = get_single_channel(sdata, image_key, channel=channel)
    h, w = image.sizes["y"], image.sizes["x"]
    if cell_id is not None:
        region = _region_of_cell(np.asarray(sdata[Key.labels(keys[0])].values), int(cell_id), margin)
    x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Region {region} does not overlap image {image_key!r} ({h} x {w} px).")
    crop = normalize_array(np.asarray(image.data[y0:y1, x0:x1]))

    tx = None
    if transcripts and sdata.points:
        tx = transcripts_to_pixels(sdata, points_key, image_key)
        tx = tx[(tx.x >= x0) & (tx.x < x1) & (tx.y >= y0) & (tx.y < y1)]
        if len(tx) > max_points:
            tx = tx.sample(max_points, random_state=0)

    fig, axes = make_axes(len(keys), ax)
    extent = (x0, x1, y1, y0)
    for key, panel in zip(keys, axes, strict=True):
        labels = np.asarray(sdata[Key.labels(key)].data[y0:y1, x0:x1])
        panel.imshow(crop, cmap="gray", extent=extent, interpolation="nearest")
        edges = find_boundaries(labels, mode="inner")
        overlay = np.zeros((*labels.shape, 4), np.float32)
        overlay[edges] = (*BOUNDARY_COLOR, 1.0)
        panel.imshow(overlay, extent=extent, interpolation="nearest")
        if tx is not None and len(tx):
            rows = np.floor(tx.y.to_numpy()).astype(int) - y0
            cols = np.floor(tx.x.to_numpy()).astype(int) - x0
            inside = labels[rows, cols] > 0
            panel.scatter(tx.x[~inside], tx.y[~inside], s=point_size, c=OUTSIDE_COLOR, linewidths=0, label="outside")
            panel.scatter(tx.x[inside], tx.y[inside], s=point_size, c=INSIDE_COLOR, linewidths=0, label="inside")
        n_cells = np.unique(labels[labels > 0]).size
        panel.set_title(f"{key} ({n_cells} cells)")
        panel.set_xlim(x0, x1)
        panel.set_ylim(y1, y0)
        panel.set_xticks([])
        panel.set_yticks([])
        um = pixel_size_um(image)
        if scale_bar and um:
            add_scale_bar(panel, um, x1 - x0)
    if tx is not None and len(tx):
        axes[-1].legend(loc="upper right", markerscale=3, fontsize="small", title="transcripts")
    return finish(fig, axes, show=show, return_fig=return_fig, user_ax=ax is not None)
