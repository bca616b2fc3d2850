"""Cell polygons from a label image, indexed by label id."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from skimage.measure import find_contours
from tqdm.auto import tqdm

from .._settings import settings


def _outline(mask: np.ndarray, row0: int, col0: int) -> Polygon | None:
    """Outer outline of one connected piece, in spatialdata pixel coordinates (pixel centres at i + 0.5)."""
    padded = np.pad(ndimage.binary_fill_holes(mask), 1)
    contours = find_contours(padded.astype(np.float32), 0.5)
    if not contours:
        return None
    contour = max(contours, key=len)
    # -1 undoes the padding, +0.5 moves from array index to spatialdata's pixel-centre frame.
    xy = np.c_[contour[:, 1] + col0 - 0.5, contour[:, 0] + row0 - 0.5]
    poly = Polygon(xy)
    return poly if poly.is_valid else poly.buffer(0)


def labels_to_polygons(labels: np.ndarray, *, progress: bool | None = None) -> gpd.GeoDataFrame:
    """Trace every cell of a label image as a polygon (a MultiPolygon for cells in several pieces).

    Parameters
    ----------
    labels
        2D integer label image, 0 = background.
    progress
        Show a progress bar (default: ``gsn.settings.progress`` for more than 5,000 cells).

    Returns
    -------
    GeoDataFrame indexed by label id, in the label image's pixel frame.
    """
    labels = np.asarray(labels)
    slices = ndimage.find_objects(labels)
    ids, geoms = [], []
    present = [i for i, s in enumerate(slices) if s is not None]
    show = settings.progress and len(present) > 5000 if progress is None else progress
    for i in tqdm(present, desc="polygons", disable=not show):
        sl = slices[i]
        label = i + 1
        mask = labels[sl] == label
        pieces, n = ndimage.label(mask)
        if n == 1:
            geom = _outline(mask, sl[0].start, sl[1].start)
        else:
            parts = [_outline(pieces == k, sl[0].start, sl[1].start) for k in range(1, n + 1)]
            parts = [p for p in parts if p is not None and not p.is_empty]
            polys = [g for p in parts for g in (p.geoms if isinstance(p, MultiPolygon) else [p])]
            geom = MultiPolygon(polys) if polys else None
        if geom is None or geom.is_empty:
            continue
        ids.append(label)
        geoms.append(geom)
    index = np.asarray(ids, dtype=np.int64)
    return gpd.GeoDataFrame(geometry=geoms, index=index)
