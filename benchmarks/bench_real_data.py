"""Real-data check: the default model and a model trained on the sample's own prior, against the prior.

Run: ``python benchmarks/bench_real_data.py [--steps 300] [--rounds 2]``. For the Xenium crop and CosMx
field of view 3 it reports cell count, median area (px), fraction of transcripts in cells and cell
calling (delta 3, 5, 7 px) for: the prior labels, GeneSegNet with the shipped default model, and
GeneSegNet trained recursively on that sample's own prior (slim network, CPU); for Xenium also the
instrument's own transcript assignment (``cell_id`` column, no boundaries: no cell calling).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import gsn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def row(sdata, key: str, table) -> dict:
    t = sdata[f"{key}_table"]
    calling = table[(table.key == key) & (table.metric == "cell_calling") & (table.stat == "ratio")]
    assigned = (sdata["transcripts"][f"{key}_cell_id"].compute() > 0).mean()
    return {
        "segmentation": key,
        "cells": t.n_obs,
        "median area px": float(np.median(t.obs["area"])) if t.n_obs else float("nan"),
        "transcripts in cells": f"{assigned:.3f}",
        "cell calling d=3/5/7": "/".join(f"{v:.2f}" for v in calling.sort_values("level").value),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps per round (own-prior model)")
    parser.add_argument("--rounds", type=int, default=2, help="max recursive rounds (own-prior model)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    gsn.settings.progress = False
    default = gsn.models.load("default")
    print("| sample | segmentation | cells | median area px | transcripts in cells | cell calling d=3/5/7 | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in ("xenium_breast_bidcell", "cosmx_lung12_fov003"):
        sdata = gsn.io.read_folder(DATA / name)
        gsn.tl.cells_from_labels(sdata, "prior_labels")
        timings = {"prior": 0.0}
        t = time.perf_counter()
        gsn.tl.segment(sdata, default, key_added="default")
        timings["default"] = time.perf_counter() - t
        t = time.perf_counter()
        own = gsn.tl.train(sdata, labels_key="prior_labels", widths=gsn.models.SLIM_WIDTHS, crop_size=128,
                           epochs=max(args.steps // 25, 1), steps_per_epoch=25, rna_scale="auto",
                           pixel_size=default.config.pixel_size, center_sigma=3.0, max_rounds=args.rounds,
                           device="cpu")  # fmt: skip
        gsn.tl.segment(sdata, own, key_added="own_prior")
        timings["own_prior"] = time.perf_counter() - t
        table = gsn.tl.compare(sdata, keys=["prior", "default", "own_prior"])
        for key in ("prior", "default", "own_prior"):
            r = row(sdata, key, table)
            print(f"| {name} | {key} | {r['cells']} | {r['median area px']:.0f} | {r['transcripts in cells']} | "
                  f"{r['cell calling d=3/5/7']} | {timings[key]:.0f} |", flush=True)  # fmt: skip
        if name.startswith("xenium"):
            ids = sdata["transcripts"]["cell_id"].compute()
            n, fraction = ids[ids > 0].nunique(), (ids > 0).mean()
            print(f"| {name} | Xenium instrument (cell_id) | {n} | - | {fraction:.3f} | - | - |")


if __name__ == "__main__":
    main()
