"""Whole cells, not nuclei: transcript-aware growth against nuclei expansion, on synthetic truth and real crops.

Run: ``python benchmarks/bench_whole_cells.py [--synthetic] [--real] [--train] [--seeds 101 102]
[--regimes sparse dense ...] [--model FILE]`` (both parts by default; about 5 minutes on a 2-core
CPU without ``--train``, which adds own-sample training, ``gsn.tl.train`` with its defaults on each
sample's own prior, about 8.5 minutes per sample).

Synthetic (held-out seeds, never used to choose any constant of the method): sparse (about 30
transcripts per cell) and dense (about 200) tissue, 512 x 512 px at 0.5 µm, each also in the harder
variant ``gsn.datasets.HARD`` (RNA-poor cytoplasm varying between cells, overlapping type profiles,
weakly stained nuclei). Rows: the prior nuclei,
the best fixed expansion of the prior (the radius chosen on the truth: an oracle), ``grow_cells``
on the prior, and default ``gsn.tl.segment`` (network + growth). Scores: mean IoU of matched cells
(IoU >= 0.5), F1 at 0.5, and transcripts assigned to their true cell (``match_truth``'s
``transcript_accuracy``; background molecules count as correct when unassigned, so the truth itself
scores below 1). The truth's own score is printed as the ceiling.

Real (``../shared/data``): cells, fraction of transcripts in cells, MECR (markers derived once per
crop from the prior nuclei's cells and shared by every row), cell calling at delta 5 px and median
area, for the prior, default ``segment``, ``grow_cells`` on the prior, the instrument's cells where
the crop has them, and nuclei expansion at 0-15 µm (the reference curve); ``below curve`` says
whether a row's MECR is below the expansion curve interpolated at the row's fraction in cells.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = ("xenium_breast_bidcell", "cosmx_lung12_fov003", "merscope_mouse_brain")


def _print(rows: list[dict], title: str) -> None:
    """Markdown table of dict rows (columns in order of first appearance; blanks where a row has none)."""
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(f"\n## {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |", flush=True)


def _truth_scores(sdata, key: str) -> dict:
    from gsn.tl import match_truth

    row = match_truth(sdata, key, "truth_labels").iloc[0]
    return {
        "cells": int(row["n_pred"]),
        "matched IoU": round(float(row["mean_matched_iou"]), 3),
        "F1@0.5": round(float(row["f1"]), 3),
        "tx to true cell": round(float(row["transcript_accuracy"]), 3),
    }


def _own_training(sdata) -> tuple[object, float]:
    """``gsn.tl.train`` with its defaults on the sample's own prior; the model and the seconds it took."""
    import gsn

    t0 = time.perf_counter()
    model = gsn.tl.train(sdata, labels_key="prior_labels")
    return model, time.perf_counter() - t0


REGIMES = ("sparse", "dense", "hard sparse", "hard dense")


def synthetic_part(seeds: list[int], train: bool = False, segment_model=None, only=REGIMES) -> list[dict]:
    """Mean truth scores per regime (those in ``only``) over the seeds."""
    from skimage.segmentation import expand_labels

    import gsn

    rows = []
    regimes = {"sparse": {"transcripts_per_cell": 30.0}, "dense": {"transcripts_per_cell": 200.0}}
    regimes.update({f"hard {k}": {**v, **gsn.datasets.HARD} for k, v in list(regimes.items())})
    for regime, kw in regimes.items():
        if regime not in only:
            continue
        acc: dict[str, list[dict]] = {}
        for seed in seeds:
            sdata = gsn.datasets.synthetic(shape=(512, 512), seed=seed, **kw)
            prior = np.asarray(sdata["prior_labels"].values)
            gsn.tl.cells_from_labels(sdata, "prior_labels", key_added="prior")
            gsn.tl.cells_from_labels(sdata, "truth_labels", key_added="truth")
            best, best_r = None, 0
            for r in range(1, 16):
                gsn.tl.write_segmentation(sdata, expand_labels(prior, r), key_added="exp", overwrite=True)
                s = _truth_scores(sdata, "exp")
                if best is None or s["matched IoU"] > best["matched IoU"]:
                    best, best_r = s, r
            t0 = time.perf_counter()
            gsn.tl.grow_cells(sdata, "prior_labels", key_added="grown")
            t_grow = time.perf_counter() - t0
            t0 = time.perf_counter()
            gsn.tl.segment(sdata, segment_model)
            t_seg = time.perf_counter() - t0
            extra = []
            if train:
                model, t_train = _own_training(sdata)
                gsn.tl.segment(sdata, model, key_added="own")
                extra = [("own-sample training + segment", {**_truth_scores(sdata, "own"), "s": round(t_train, 1)})]
            for name, s in (
                ("truth (ceiling)", _truth_scores(sdata, "truth")),
                ("prior nuclei", _truth_scores(sdata, "prior")),
                (f"best expansion (r = {best_r} px, oracle)", best),
                ("grow_cells(prior)", {**_truth_scores(sdata, "grown"), "s": round(t_grow, 1)}),
                ("segment (default)", {**_truth_scores(sdata, "genesegnet"), "s": round(t_seg, 1)}),
                *extra,
            ):
                acc.setdefault(name.split(" (r =")[0], []).append({"label": name, **s})
        for name, runs in acc.items():
            row = {"regime": regime, "segmentation": name}
            for col in ("cells", "matched IoU", "F1@0.5", "tx to true cell", "s"):
                vals = [r[col] for r in runs if col in r]
                if vals:
                    row[col] = round(float(np.mean(vals)), 3) if col != "cells" else int(np.mean(vals))
            rows.append(row)
    return rows


def _real_row(sdata, name, key, markers, curve):
    """One real-crop row: cells, fraction in cells, MECR against the expansion curve, cell calling, area."""
    import gsn

    table = gsn.tl.compare(sdata, [key])

    def get(metric, stat, level=None):
        rows = table[(table.metric == metric) & (table.stat == stat)]
        return float((rows if level is None else rows[rows.level == level]).value.iloc[0])

    pure = gsn.tl.purity(sdata, [key], markers, reference=curve).iloc[0]
    frac, value, ref = pure["transcripts_in_cells"], pure["mecr"], pure["reference_mecr"]
    return {
        "segmentation": name,
        "cells": int(get("n_cells", "value")),
        "tx in cells": round(frac, 3),
        "MECR": round(value, 4),
        "expansion MECR at same fraction": round(ref, 4),
        "below curve": "yes" if value < ref else "no",
        "cell calling d=5": round(get("cell_calling", "ratio", 5), 2),
        "median area px": int(get("area", "median")),
    }


def real_part(train: bool = False, segment_model=None) -> list[dict]:
    """Rows for each real crop, markers derived once from its prior."""
    import gsn

    rows = []
    for folder in REAL:
        path = DATA / folder
        if not path.exists():
            print(f"(skipping {folder}: not found at {path})")
            continue
        sdata = gsn.io.read_folder(path)
        gsn.tl.cells_from_labels(sdata, "prior_labels", key_added="prior")
        markers = gsn.tl.marker_genes(sdata, "prior")
        curve = gsn.tl.expansion_curve(sdata, "prior_labels", markers)
        t0 = time.perf_counter()
        gsn.tl.segment(sdata, segment_model)
        t_seg = time.perf_counter() - t0
        gsn.tl.grow_cells(sdata, "prior_labels", key_added="prior_grown")
        crop = folder.split("_")[0]
        out = [
            _real_row(sdata, "prior", "prior", markers, curve),
            {**_real_row(sdata, "segment (default)", "genesegnet", markers, curve), "s": round(t_seg, 1)},
            _real_row(sdata, "grow_cells(prior)", "prior_grown", markers, curve),
        ]
        if train:
            model, t_train = _own_training(sdata)
            gsn.tl.segment(sdata, model, key_added="own")
            rounds = model.rounds or [{}]
            out.append({**_real_row(sdata, "own-sample training + segment", "own", markers, curve),
                        "s": round(t_train, 1), "prior cells": int(sdata["prior_table"].n_obs),
                        "rounds with no cells": sum(1 for r in rounds if r.get("n_cells", 1) == 0)})  # fmt: skip
        tx = sdata["transcripts"]
        if "cell_id" in tx.columns and folder.startswith("xenium"):
            vendor = tx["cell_id"].compute()
            frac = float(np.mean(~vendor.astype(str).isin(["UNASSIGNED", "0", "-1", "nan"])))
            out.append({"segmentation": "instrument cell_id", "tx in cells": round(frac, 3)})
        for d in (5.0, 10.0, 15.0):
            r = curve[curve.distance == d].iloc[0]
            out.append({"segmentation": f"expansion {d:g} µm", "cells": int(r.n_cells),
                        "tx in cells": round(r.transcripts_in_cells, 3), "MECR": round(r.mecr, 4)})  # fmt: skip
        rows.extend({"crop": crop, **r} for r in out)
    return rows


def main() -> None:
    """Parse the arguments and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--train", action="store_true", help="add own-sample training rows (slow)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES, metavar="REGIME",
                        help=f"synthetic regimes to run, of {REGIMES}")  # fmt: skip
    parser.add_argument("--model", default=None, help="weights file for the segment rows (default: the shipped model)")
    args = parser.parse_args()
    both = not (args.synthetic or args.real)
    logging.getLogger("gsn").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if both or args.synthetic:
        _print(
            synthetic_part(args.seeds, args.train, args.model, args.regimes),
            f"Synthetic, held-out seeds {args.seeds} (means)",
        )
    if both or args.real:
        _print(real_part(args.train, args.model), "Real crops (markers from the prior's cells, shared by every row)")


if __name__ == "__main__":
    main()
