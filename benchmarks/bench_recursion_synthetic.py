"""Does recursive label refinement help? Accuracy per round on synthetic tissue (truth known).

Run: ``python benchmarks/bench_recursion_synthetic.py [--rounds 3] [--epochs 12] [--nu 1]`` (about 8
minutes per run on one core of a 2-core CPU with the defaults).

Protocol (as ``bench_accuracy_synthetic.py``, whose helpers this imports): GeneSegNet (slim widths)
is trained on the noisy prior labels of sample ``--train-seed`` (a watershed of the nucleus image);
after each round the model predicts on the training image, the cells are decoded and refined by the
level set (``--nu``, lambda1 = lambda2 = 1) and become the next round's labels (warm start: each
round continues from the previous weights). After every round the model segments a different
sample (``--test-seed``), scored against its true cells; the training labels the round produced are
also scored against the training sample's truth. Baselines on the test sample: the prior labels and
nuclei expansion with the radius best on the truth (oracle-tuned).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy_synthetic import add_labels, best_expansion, print_table, score  # noqa: E402


def main() -> None:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, default=512)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iou-stop", type=float, default=0.93)
    p.add_argument("--epochs", type=int, default=12, help="epochs per round")
    p.add_argument("--steps", type=int, default=25, help="steps per epoch")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--nu", type=float, default=1.0, help="level-set length weight (paper: 1)")
    p.add_argument("--no-refine", action="store_true", help="no level set between rounds")
    p.add_argument("--widths", default="16,32,64,128")
    p.add_argument("--baselines", action="store_true", help="also score prior and nuclei expansion")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("gsn").setLevel(logging.WARNING)
    import torch

    import gsn
    from gsn.models import Augmentation, GeneSegNetModel, ModelConfig, TrainingSample
    from gsn.models._recursive import check_training_labels, recursive_train
    from gsn.tl._segment import prepare_inputs, segment

    gsn.settings.progress = False
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    shape = (args.shape, args.shape)
    train_sd = gsn.datasets.synthetic(shape=shape, seed=args.train_seed)
    test_sd = gsn.datasets.synthetic(shape=shape, seed=args.test_seed)
    print(f"train seed {args.train_seed}, test seed {args.test_seed}, {shape[0]} px; widths {widths}, "
          f"{args.epochs} x {args.steps} steps per round, batch {args.batch}, crop {args.crop}, "
          f"nu {args.nu}, refine {not args.no_refine}, up to {args.rounds} rounds, "
          f"stop at IoU {args.iou_stop}")  # fmt: skip

    rows = []
    if args.baselines:
        _, s = best_expansion(test_sd, "prior_labels", [0])
        rows.append(("prior labels (noisy nuclei)", s, ""))
        r, s = best_expansion(test_sd, "prior_labels", range(0, 16, 2))
        rows.append((f"prior expanded, best r = {r} px", s, "radius tuned on truth"))
        r, s = best_expansion(test_sd, "truth_nuclei", range(0, 16, 2))
        rows.append((f"true nuclei expanded, best r = {r} px", s, "radius tuned on truth"))

    prep = prepare_inputs(train_sd, image_key="dapi", points_key="transcripts", sigma=7.0)
    prior = check_training_labels(np.asarray(train_sd.labels["prior_labels"].values), prep.shape)
    sample = TrainingSample(prep.inputs, prior, name="train")
    add_labels(train_sd, "Y1", prior)
    s = score(train_sd, "Y1")
    print(f"training labels Y(1) = prior: {s['cells']} cells, matched IoU {s['matched IoU']:.3f}, "
          f"true-cell IoU {s['true-cell IoU']:.3f}, F1 {s['F1@0.5']:.3f}")  # fmt: skip

    torch.manual_seed(0)
    model = GeneSegNetModel(ModelConfig(channels=list(prep.channels), widths=widths, pixel_size=prep.pixel_size))
    t_start = time.perf_counter()

    def on_round(t, m, new_labels):
        t0 = time.perf_counter()
        key = f"gsn_round{t}"
        segment(test_sd, m, "dapi", "transcripts", key_added=key)
        rec = m.rounds[-1]
        rows.append((f"GeneSegNet after round {t}", score(test_sd, key),
                     f"round IoU {rec['mean_iou']:.3f}, train {rec['seconds_train']:.0f} s, "
                     f"label update {rec['seconds'] - rec['seconds_train']:.1f} s"))  # fmt: skip
        add_labels(train_sd, f"Y{t + 1}", new_labels[0])
        ys = score(train_sd, f"Y{t + 1}")
        print(f"round {t}: loss {rec['loss']:.3f}, mean best IoU Y({t}) vs Y({t + 1}) {rec['mean_iou']:.3f}, "
              f"Y({t + 1}): {rec['n_cells']} cells, mean area {rec['mean_area_in']:.0f} -> {rec['mean_area']:.0f} px, "
              f"vs train truth matched IoU {ys['matched IoU']:.3f} true-cell IoU {ys['true-cell IoU']:.3f} "
              f"F1 {ys['F1@0.5']:.3f}; test: true-cell IoU {rows[-1][1]['true-cell IoU']:.3f} "
              f"(eval {time.perf_counter() - t0:.0f} s, total {time.perf_counter() - t_start:.0f} s)",
              flush=True)  # fmt: skip

    recursive_train(
        model, [sample], max_rounds=args.rounds, iou_stop=args.iou_stop, refine=not args.no_refine, nu=args.nu,
        on_round=on_round, seed=0, device="cpu", epochs=args.epochs, steps_per_epoch=args.steps,
        batch_size=args.batch, crop_size=args.crop, augmentation=Augmentation(), progress=False,
    )  # fmt: skip

    print_table(rows, first="method (test sample)")


if __name__ == "__main__":
    main()
