"""Accuracy of GeneSegNet against the truth of synthetic tissue, next to the image-only baselines.

Run: ``python benchmarks/bench_accuracy_synthetic.py [--epochs 40] [--truth]`` (about 10 minutes on a
2-core CPU with the defaults; ``--truth`` adds a second training run, on the true cells).

Protocol:

- one synthetic sample (``--train-seed``) is used for training: GeneSegNet is trained on its noisy
  prior labels (``prior_labels``: a watershed of the nucleus image, what a user would start from),
  one round, no recursive refinement, slim width;
- a *different* sample (``--test-seed``) is segmented and compared with its true cells;
- baselines on the test sample: the watershed of the nucleus image (``gsn.pp.watershed``), the
  prior labels as they are, and nuclei expansion (``skimage.segmentation.expand_labels``) of the
  prior and of the *true* nuclei by the radius that is best on this very sample (an optimistic,
  oracle-tuned baseline);
- with ``--truth``, GeneSegNet is also trained on the true cells of the training sample: the
  network's accuracy when its labels are right (an upper bound for the recursive refinement).

Scores (``gsn.tl`` truth metrics): mean IoU of matched cells (IoU >= 0.5 pairs), mean over true
cells of their best IoU, F1 at IoU 0.5, and the fraction of transcripts assigned to their true cell
(background molecules count as correct when left unassigned).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np


def _match_truth():
    """Return the project's truth-matching function (public name once exported, else the module's)."""
    try:
        from gsn.tl import match_truth
    except ImportError:
        from gsn.tl._metrics_truth import match_truth
    return match_truth


def score(sdata, key: str) -> dict[str, float]:
    """Accuracy of segmentation ``key`` against ``truth_labels`` at IoU 0.5."""
    row = _match_truth()(sdata, key, "truth_labels").iloc[0]  # first row: IoU threshold 0.5
    return {
        "cells": int(row["n_pred"]),
        "matched IoU": row["mean_matched_iou"],
        "true-cell IoU": row["mean_true_iou"],
        "F1@0.5": row["f1"],
        "tx to true cell": row["transcript_accuracy"],
    }


def add_labels(sdata, key: str, labels: np.ndarray) -> None:
    """Write a label image as a full segmentation (cells, table, transcript column)."""
    from gsn.tl import write_segmentation

    write_segmentation(
        sdata, labels.astype(np.int32), image_key="dapi", points_key="transcripts", key_added=key, overwrite=True
    )


def best_expansion(sdata, source: str, radii) -> tuple[int, dict[str, float]]:
    """Expand labels ``source`` by each radius and return the radius best on the truth, with its scores."""
    from skimage.segmentation import expand_labels

    base = np.asarray(sdata.labels[source].values)
    best = None
    for r in radii:
        key = f"{source}_x{r}"
        add_labels(sdata, key, expand_labels(base, r) if r else base)
        s = score(sdata, key)
        if best is None or s["true-cell IoU"] > best[1]["true-cell IoU"]:
            best = (r, s)
    return best


def main() -> None:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, default=512)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps", type=int, default=25, help="steps per epoch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--widths", default="16,32,64,128")
    p.add_argument("--truth", action="store_true", help="also train on the true cells")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 by default: on a shared machine OpenMP threads that wait on each other "
                        "can make 2 threads several times slower than 1")  # fmt: skip
    args = p.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("gsn").setLevel(logging.WARNING)
    import torch

    import gsn
    from gsn.tl._segment import segment
    from gsn.tl._train import train

    gsn.settings.progress = False
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    widths = tuple(int(w) for w in args.widths.split(","))
    shape = (args.shape, args.shape)
    train_sd = gsn.datasets.synthetic(shape=shape, seed=args.train_seed)
    test_sd = gsn.datasets.synthetic(shape=shape, seed=args.test_seed)
    n_true = int(np.asarray(test_sd.labels["truth_labels"].values).max())
    print(f"train seed {args.train_seed}, test seed {args.test_seed}, {shape[0]} x {shape[1]} px, "
          f"{n_true} true cells; GeneSegNet widths {widths}, {args.epochs} x {args.steps} steps, "
          f"batch {args.batch}, crop {args.crop}, {torch.get_num_threads()} threads")  # fmt: skip

    rows: list[tuple[str, dict[str, float], str]] = []
    t0 = time.perf_counter()
    gsn.pp.watershed(test_sd, "dapi", key_added="ws")
    gsn.tl.cells_from_labels(test_sd, "ws_labels", "transcripts")
    rows.append(("watershed (gsn.pp.watershed)", score(test_sd, "ws"), f"{time.perf_counter() - t0:.1f} s"))
    _, s = best_expansion(test_sd, "prior_labels", [0])
    rows.append(("prior labels (noisy nuclei)", s, ""))
    r, s = best_expansion(test_sd, "prior_labels", range(0, 16, 2))
    rows.append((f"prior expanded, best r = {r} px", s, "radius tuned on truth"))
    r, s = best_expansion(test_sd, "truth_nuclei", range(0, 16, 2))
    rows.append((f"true nuclei expanded, best r = {r} px", s, "radius tuned on truth"))

    runs = [("prior_labels", "GeneSegNet, trained on prior")]
    if args.truth:
        runs.append(("truth_labels", "GeneSegNet, trained on true cells"))
    for labels_key, name in runs:
        t0 = time.perf_counter()
        model = train(train_sd, labels_key=labels_key, widths=widths, epochs=args.epochs,
                      steps_per_epoch=args.steps, batch_size=args.batch, crop_size=args.crop, seed=0)  # fmt: skip
        t_train = time.perf_counter() - t0
        for blending in ("mean", "gaussian"):
            key = f"gsn_{labels_key}_{blending}"
            t0 = time.perf_counter()
            segment(test_sd, model, "dapi", "transcripts", key_added=key, blending=blending)
            t_inf = time.perf_counter() - t0
            rows.append((f"{name} ({blending} blending)", score(test_sd, key),
                         f"train {t_train:.0f} s, segment {t_inf:.1f} s"))  # fmt: skip
        h = model.history
        print(f"{name}: loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f} over {len(h)} epochs")

    print_table(rows)


def print_table(rows, first: str = "method") -> None:
    """Print ``(name, scores, note)`` rows as the markdown table both accuracy benchmarks report."""
    cols = ["cells", "matched IoU", "true-cell IoU", "F1@0.5", "tx to true cell"]
    print()
    print(f"| {first} | " + " | ".join(cols) + " | notes |")
    print("|---" * (len(cols) + 2) + "|")
    for name, s, note in rows:
        vals = [f"{s[c]}" if c == "cells" else f"{s[c]:.3f}" for c in cols]
        print(f"| {name} | " + " | ".join(vals) + f" | {note} |")


if __name__ == "__main__":
    main()
