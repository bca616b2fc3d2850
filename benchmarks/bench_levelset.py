"""What the level-set refinement does to cell shape, and how long it takes.

Run: ``python benchmarks/bench_levelset.py``. Prints, for a few synthetic masks with 1-px boundary
jitter, area / convexity / elongation before and after ``refine_label_image`` with the paper's
weights (nu = lambda1 = lambda2 = 1) and with a stronger length weight, and the time to refine all
cells of a synthetic 1024 x 1024 image.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from skimage.measure import perimeter, regionprops

from gsn.models._levelset import refine_label_image


def shapes(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:64, :64]
    out = {}
    r = np.hypot(rr - 32, cc - 32)
    jitter = ndimage.gaussian_filter(rng.normal(0, 1, (64, 64)), 1) * 3
    out["disk r=12, jittered"] = r + jitter < 12
    out["ellipse 24x8, jittered"] = ((rr - 32) / 8) ** 2 + ((cc - 32) / 24) ** 2 + jitter / 12 < 1
    out["square 20 px"] = (abs(rr - 32) < 10) & (abs(cc - 32) < 10)
    notch = r < 12
    notch[31:34, 20:32] = False
    out["disk with 3-px notch"] = notch
    spur = r < 10
    spur[31:33, 32:52] = True
    out["disk with 2-px spur"] = spur
    return out


def morphology(mask: np.ndarray) -> tuple[int, float, float]:
    props = regionprops(mask.astype(np.uint8))[0]
    convexity = perimeter(props.image_convex) / max(perimeter(props.image), 1e-9)
    edge = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(edge).astype(float)
    ev = np.linalg.eigvalsh(np.cov(pts.T, bias=True))
    return int(mask.sum()), float(convexity), float(ev[0] / ev[1])


def main() -> None:
    print("| mask | nu | area in -> out | convexity in -> out | elongation e_b/e_a in -> out |")
    print("|---|---|---|---|---|")
    for name, mask in shapes().items():
        a0, c0, e0 = morphology(mask)
        for nu in (1.0, 5.0):
            out = refine_label_image(mask.astype(np.int32), nu=nu) == 1
            a1, c1, e1 = morphology(out)
            print(f"| {name} | {nu:g} | {a0} -> {a1} | {c0:.3f} -> {c1:.3f} | {e0:.3f} -> {e1:.3f} |")
    from gsn.datasets import synthetic

    labels = synthetic(shape=(1024, 1024), seed=0)["truth_labels"].values
    for nu in (1.0, 5.0):
        t = time.perf_counter()
        out = refine_label_image(labels, nu=nu)
        dt = time.perf_counter() - t
        changed = np.mean(out != labels)
        print(f"\n1024 x 1024 synthetic image, {int(labels.max())} cells, nu={nu:g}: {dt:.2f} s, "
              f"{changed:.2%} of pixels changed label")  # fmt: skip


if __name__ == "__main__":
    main()
