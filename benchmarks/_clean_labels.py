"""Time of ``gsn.models.clean_labels`` against the implementation it replaced (whole-image ``np.unique``).

Run: ``python benchmarks/_clean_labels.py``. Input: a 4096 x 4096 synthetic instance map of the kind
decoding produces (touching cells, stray pixels of neighbouring cells and of background, so that
there are extra pieces, holes and small cells to clean). The baseline is kept here only to be timed
and, in ``tests/test_clean_labels.py``, to check that the output is unchanged bit for bit.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage


def _old_pieces_per_label(labels: np.ndarray) -> tuple[np.ndarray, int]:
    h, w = labels.shape
    up = np.zeros((2 * h - 1, 2 * w - 1), dtype=bool)
    fg = labels > 0
    up[::2, ::2] = fg
    up[1::2, ::2] = fg[1:] & (labels[1:] == labels[:-1])
    up[::2, 1::2] = fg[:, 1:] & (labels[:, 1:] == labels[:, :-1])
    comp, n = ndimage.label(up)
    return comp[::2, ::2], n


def old_clean_labels(labels: np.ndarray, *, min_area: int = 15, fill_holes: bool = True) -> np.ndarray:
    """Clean labels as gsn did before the lookup-table version (baseline only)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}.")
    labels = labels.astype(np.int64, copy=False)
    if not labels.any():
        return np.zeros(labels.shape, dtype=np.int32)

    pieces, n = _old_pieces_per_label(labels)
    fg = pieces > 0
    pid = pieces[fg]
    size = np.bincount(pid, minlength=n + 1)
    lab_of_piece = np.zeros(n + 1, dtype=np.int64)
    lab_of_piece[pid] = labels[fg]
    order = np.lexsort((-size[1:], lab_of_piece[1:])) + 1
    first = np.ones(order.size, dtype=bool)
    first[1:] = lab_of_piece[order[1:]] != lab_of_piece[order[:-1]]
    keep = np.zeros(n + 1, dtype=bool)
    keep[order[first]] = True
    out = np.where(keep[pieces], labels, 0)

    if fill_holes:
        bg, nb = ndimage.label(out == 0)
        if nb:
            border = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
            pairs = []
            for a, b in (
                (bg[1:], out[:-1]),
                (bg[:-1], out[1:]),
                (bg[:, 1:], out[:, :-1]),
                (bg[:, :-1], out[:, 1:]),
            ):
                m = (a > 0) & (b > 0)
                pairs.append(np.stack([a[m], b[m]], axis=1))
            pairs = np.unique(np.concatenate(pairs), axis=0)
            if pairs.size:
                n_neigh = np.bincount(pairs[:, 0], minlength=nb + 1)
                fill_with = np.zeros(nb + 1, dtype=np.int64)
                fill_with[pairs[:, 0]] = pairs[:, 1]
                fillable = n_neigh == 1
                fillable[border] = False
                fillable[0] = False
                holes = fillable[bg]
                out[holes] = fill_with[bg[holes]]

    ids, inv, area = np.unique(out, return_inverse=True, return_counts=True)
    inv = inv.reshape(out.shape)
    small = (area < min_area) & (ids > 0)
    keep_id = (ids > 0) & ~small
    first_pos = np.full(ids.size, np.iinfo(np.int64).max)
    np.minimum.at(first_pos, inv.ravel(), np.arange(out.size))
    new = np.zeros(ids.size, dtype=np.int32)
    kept = np.flatnonzero(keep_id)
    new[kept[np.argsort(first_pos[kept])]] = np.arange(1, kept.size + 1, dtype=np.int32)
    return new[inv]


def decoded_like(side: int = 4096, mean_area: float = 150.0, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    """Int32 instance map like a decoder's: Voronoi cells clipped to a radius, plus stray pixels.

    A fraction ``noise`` of the pixels takes the value found a few pixels away (a neighbouring cell or
    background), which leaves extra pieces, holes and tiny cells behind, as decoding errors do.
    """
    rng = np.random.default_rng(seed)
    n = int(side * side / mean_area)
    seeds = np.zeros((side, side), dtype=np.int32)
    seeds[rng.integers(0, side, n), rng.integers(0, side, n)] = np.arange(1, n + 1, dtype=np.int32)
    dist, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[ir, ic]
    labels[dist > rng.uniform(3.0, 9.0, n + 1)[labels]] = 0
    rows, cols = np.nonzero(rng.random(labels.shape) < noise)
    dr, dc = rng.integers(-4, 5, rows.size), rng.integers(-4, 5, rows.size)
    labels[rows, cols] = labels[np.clip(rows + dr, 0, side - 1), np.clip(cols + dc, 0, side - 1)]
    return labels


def _time(fn, labels, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(labels)
        best = min(best, time.perf_counter() - t)
    return best


def clean_rows(*, side: int = 4096, repeat: int = 3) -> list[dict]:
    """Seconds of the old and the new ``clean_labels`` on one synthetic map (best of ``repeat``), same output."""
    from gsn.models import clean_labels

    labels = decoded_like(side)
    old, new = old_clean_labels(labels), clean_labels(labels)
    if not np.array_equal(old, new) or old.dtype != new.dtype:
        raise AssertionError("clean_labels output differs from the baseline")
    old_s = _time(old_clean_labels, labels, repeat)
    new_s = _time(clean_labels, labels, repeat)
    return [{"shape": labels.shape, "cells_in": int(labels.max()), "cells_out": int(new.max()), "seconds_old": old_s,
             "seconds_new": new_s, "ratio": old_s / new_s}]  # fmt: skip


if __name__ == "__main__":
    print(f"{'shape':>10} {'ids in':>8} {'cells out':>9} {'old s':>7} {'new s':>7} {'ratio':>6}")
    for r in clean_rows():
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{shape:>10} {r['cells_in']:>8} {r['cells_out']:>9} {r['seconds_old']:>7.3f} {r['seconds_new']:>7.3f} "
            f"{r['ratio']:>6.1f}"
        )
