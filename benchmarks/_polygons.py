"""Time of ``gsn.tl.labels_to_polygons`` against the per-cell tracer it replaced.

Run: ``python benchmarks/_polygons.py``. Cases: the Xenium crop's prior labels (737 cells) and a
synthetic label image of about 50,000 touching cells. The baseline is the previous implementation
(skimage ``find_contours`` per cell, centre-line outlines), kept here only to be timed.
"""

from __future__ import annotations

import time
from pathlib import Path

import geopandas as gpd
import numpy as np
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from skimage.measure import find_contours

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _old_outline(mask: np.ndarray, row0: int, col0: int) -> Polygon | None:
    padded = np.pad(ndimage.binary_fill_holes(mask), 1)
    contours = find_contours(padded.astype(np.float32), 0.5)
    if not contours:
        return None
    contour = max(contours, key=len)
    xy = np.c_[contour[:, 1] + col0 - 0.5, contour[:, 0] + row0 - 0.5]
    poly = Polygon(xy)
    return poly if poly.is_valid else poly.buffer(0)


def old_labels_to_polygons(labels: np.ndarray) -> gpd.GeoDataFrame:
    """Trace cells one by one, as gsn did before the vectorised tracer (baseline only)."""
    labels = np.asarray(labels)
    slices = ndimage.find_objects(labels)
    ids, geoms = [], []
    for i, sl in enumerate(slices):
        if sl is None:
            continue
        label = i + 1
        mask = labels[sl] == label
        pieces, n = ndimage.label(mask)
        if n == 1:
            geom = _old_outline(mask, sl[0].start, sl[1].start)
        else:
            parts = [_old_outline(pieces == k, sl[0].start, sl[1].start) for k in range(1, n + 1)]
            parts = [p for p in parts if p is not None and not p.is_empty]
            polys = [g for p in parts for g in (p.geoms if isinstance(p, MultiPolygon) else [p])]
            geom = MultiPolygon(polys) if polys else None
        if geom is None or geom.is_empty:
            continue
        ids.append(label)
        geoms.append(geom)
    return gpd.GeoDataFrame(geometry=geoms, index=np.asarray(ids, dtype=np.int64))


def synthetic_labels(n_cells: int = 50_000, mean_area: float = 100.0, seed: int = 0) -> np.ndarray:
    """Touching, roughly round cells: Voronoi regions of random seeds clipped to a random radius."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n_cells * mean_area / 0.8))
    seeds = np.zeros((side, side), dtype=np.int32)
    rows, cols = rng.integers(0, side, n_cells), rng.integers(0, side, n_cells)
    seeds[rows, cols] = np.arange(1, n_cells + 1, dtype=np.int32)
    dist, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[ir, ic]
    radius = rng.uniform(4.0, 9.0, n_cells + 1)
    labels[dist > radius[labels]] = 0
    return labels


def _time(fn, labels, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(labels)
        best = min(best, time.perf_counter() - t)
    return best


def polygon_rows(*, n_synthetic: int = 50_000) -> list[dict]:
    """Seconds of the old and the new tracer on the Xenium prior and on a synthetic image (best of runs)."""
    import tifffile

    from gsn.tl import labels_to_polygons

    def new(labels):
        return labels_to_polygons(labels)

    cases = {
        "xenium_breast_bidcell prior": tifffile.imread(DATA / "xenium_breast_bidcell" / "prior_labels.tif"),
        "synthetic (Voronoi, clipped)": synthetic_labels(n_synthetic),
    }
    rows = []
    for name, labels in cases.items():
        n = int(np.unique(labels[labels > 0]).size)
        old_s = _time(old_labels_to_polygons, labels, repeat=1 if n > 5000 else 3)
        new_s = _time(new, labels, repeat=3)
        rows.append({"case": name, "shape": labels.shape, "cells": n, "seconds_old": old_s, "seconds_new": new_s,
                     "ratio": old_s / new_s})  # fmt: skip
    return rows


if __name__ == "__main__":
    print(f"{'case':<30} {'shape':>12} {'cells':>7} {'old s':>8} {'new s':>8} {'ratio':>7}")
    for r in polygon_rows():
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['case']:<30} {shape:>12} {r['cells']:>7} {r['seconds_old']:>8.3f} {r['seconds_new']:>8.3f} "
            f"{r['ratio']:>7.1f}"
        )
