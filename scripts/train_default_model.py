"""Train the default GeneSegNet model that ships with gsn, and validate it on a held-out crop.

The shipped model (whole cells) is the first default model fine-tuned on whole-cell labels on a CPU:
``git show 138fad3:src/gsn/models/weights/default.pt > v1.pt`` and then
``python scripts/train_default_model.py --init v1.pt --epochs 80 --lr 5e-4 --threads 2`` (15 min; the
same weights, hash 90fd17244868e7e4, on this project's CPU). The first model was trained from fresh
weights on a GPU: ``--labels prior --export DIR --epochs 60 --crop 256`` here,
``python scripts/train_arrays.py DIR default.pt --device cuda`` on the GPU machine.
``--validate FILE`` prints the validation table that docs/default_model.md reports.

Training data: the Xenium, CosMx field-of-view 2 and MERSCOPE crops, labelled (``--labels whole``)
with their priors (Cellpose nuclei, vendor cells, vendor cell polygons) plus the stain's nuclei the
priors miss, grown into whole cells with the transcripts; and two synthetic tissues with their true
cells; all resampled to 0.4 um/px. Held out: CosMx field of view 3 and a synthetic tissue of another
seed. Writes the weights to ``src/gsn/models/weights/default.pt`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import gsn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "src" / "gsn" / "models" / "weights" / "default.pt"
PIXEL_SIZE = 0.4


def whole_cell_labels(sdata) -> None:
    """Add ``grown_labels``: the prior's cells plus the stain's nuclei it missed, grown with the transcripts.

    The missed nuclei are found as ``segment`` finds the network's (watershed nuclei that no prior
    cell comes near); growth then judges nuclei from whole cells and grows or regrows them.
    """
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import get_transformation

    from gsn.blockwise import Window
    from gsn.tl._anchors import anchors_kernel

    gsn.pp.watershed(sdata, key_added="stain")
    prior = np.asarray(sdata["prior_labels"].data)
    whole = Window(0, prior.shape[0], 0, prior.shape[1])
    anchors, _ = anchors_kernel(prior, np.asarray(sdata["stain_labels"].data), whole, whole, int(prior.max()))
    frame = get_transformation(sdata["prior_labels"], get_all=True)
    sdata["anchors"] = Labels2DModel.parse(anchors, dims=("y", "x"), transformations=frame)
    gsn.tl.grow_cells(sdata, "anchors", key_added="grown")


def training_samples(seed: int, labels: str = "whole"):
    """The training samples. Real crops' labels: ``"whole"``, the prior plus the nuclei it missed, grown
    into whole cells with the transcripts (:func:`whole_cell_labels`); ``"grown"``, the prior grown;
    ``"prior"``, the prior as it is. Synthetic tissues: their true cells."""
    samples = []
    for name in ("xenium_breast_bidcell", "cosmx_lung12_fov002", "merscope_mouse_brain"):
        s = gsn.io.read_folder(DATA / name)
        if labels == "whole":
            whole_cell_labels(s)
        elif labels == "grown":
            gsn.tl.grow_cells(s, "prior_labels", key_added="grown")
        s["train_labels"] = s["prior_labels"] if labels == "prior" else s["grown_labels"]
        samples.append(s)
    for k in range(2):
        s = gsn.datasets.synthetic(shape=(384, 384), seed=seed + 100 + k)
        s["train_labels"] = s["truth_labels"]
        samples.append(s)
    return samples


def validate(model) -> list[dict]:
    rows = []
    cosmx = gsn.io.read_folder(DATA / "cosmx_lung12_fov003")
    gsn.tl.segment(cosmx, model, key_added="genesegnet")
    gsn.tl.cells_from_labels(cosmx, "prior_labels")
    table = gsn.tl.compare(cosmx, keys=["prior", "genesegnet"])
    for key in ("prior", "genesegnet"):
        t = cosmx[f"{key}_table"]
        calling = table[(table.key == key) & (table.metric == "cell_calling") & (table.stat == "ratio")]
        assigned = (cosmx["transcripts"][f"{key}_cell_id"].compute() > 0).mean()
        rows.append({"sample": "CosMx FOV 3 (held out)", "segmentation": key, "cells": t.n_obs,
                     "median_area_px": float(np.median(t.obs["area"])) if t.n_obs else float("nan"),
                     "transcripts_in_cells": float(assigned),
                     "cell_calling_d3_5_7": [round(float(v), 2)
                                             for v in calling.sort_values("level").value]})  # fmt: skip
    synth = gsn.datasets.synthetic(shape=(384, 384), seed=7)
    gsn.tl.segment(synth, model, key_added="genesegnet")
    gsn.tl.cells_from_labels(synth, "prior_labels")
    for key in ("prior", "genesegnet"):
        m = gsn.tl.match_truth(synth, key, "truth_labels")
        r = m[m.threshold == 0.5].iloc[0] if "threshold" in m else m.iloc[0]
        rows.append({"sample": "synthetic seed 7 (held out)", "segmentation": key, "cells": int(r.n_pred),
                     "mean_true_iou": round(float(r.mean_true_iou), 3), "f1_at_0.5": round(float(r.f1), 3),
                     "transcripts_to_true_cell": round(float(r.transcript_accuracy), 3)})  # fmt: skip
    return rows


TRAIN_ARGS = dict(labels_key="train_labels", crop_size=128, batch_size=8, rna_scale="auto", pixel_size=PIXEL_SIZE,
                  center_sigma=3.0)  # fmt: skip


def _start_from(args) -> dict:
    """``gsn.tl.train``'s starting point: the ``--init`` model to fine-tune, or fresh slim weights."""
    if args.init:
        return {"model": gsn.models.load(args.init)}
    return {"model": None, "widths": gsn.models.SLIM_WIDTHS}


def export(folder: Path, args) -> None:
    """Write the prepared training arrays and the untrained model, to train where spatialdata is absent (a GPU box)."""
    import gsn.models

    captured = {}

    def capture(model, samples, **kwargs):
        captured.update(model=model, samples=samples, kwargs=kwargs)
        raise StopIteration

    real, gsn.models.train_network = gsn.models.train_network, capture
    try:
        gsn.tl.train(training_samples(args.seed, args.labels), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                     seed=args.seed, device="cpu", lr=args.lr, **_start_from(args),
                     **{**TRAIN_ARGS, "crop_size": args.crop})  # fmt: skip
    except StopIteration:
        pass
    finally:
        gsn.models.train_network = real
    folder.mkdir(parents=True, exist_ok=True)
    captured["model"].save(folder / "untrained.pt")
    np.savez_compressed(folder / "samples.npz", **{f"inputs{i}": s.inputs for i, s in enumerate(captured["samples"])},
                        **{f"labels{i}": s.labels for i, s in enumerate(captured["samples"])})  # fmt: skip
    kwargs = dict(captured["kwargs"])
    aug = kwargs.pop("augmentation")
    kwargs.update(scale_range=list(aug.scale_range), rotate=aug.rotate, flip=aug.flip)
    (folder / "train_kwargs.json").write_text(json.dumps(kwargs))
    print(f"exported {len(captured['samples'])} samples to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--labels",
        choices=["whole", "grown", "prior"],
        default="whole",
        help="real samples' labels: their priors plus the nuclei they missed, grown into whole cells (default); "
        "the priors grown; or the priors as they are",
    )
    parser.add_argument("--init", type=Path, help="fine-tune this model file instead of training fresh weights")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (gsn.tl.train's default if omitted)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--export", type=Path, help="only write the prepared arrays here (see scripts/train_arrays.py)")
    parser.add_argument("--validate", type=Path, help="only validate this model file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    gsn.settings.progress = False

    if args.export:
        return export(args.export, args)
    if args.validate:
        for row in validate(gsn.models.load(args.validate)):
            print(json.dumps(row))
        return
    start_from = _start_from(args)
    # train() fine-tunes the model in place: its identity is read before
    initial = start_from["model"].identity if args.init else None
    start = time.perf_counter()
    model = gsn.tl.train(
        training_samples(args.seed, args.labels), epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        seed=args.seed, device="cpu", lr=args.lr, **start_from, **{**TRAIN_ARGS, "crop_size": args.crop},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model.config.train_params["hardware"] = (
        f"{platform.processor() or platform.machine()}, {args.threads} CPU thread(s)"
    )
    model.config.train_params["train_seconds"] = round(seconds, 1)
    if initial:
        model.config.train_params["fine_tuned_from"] = initial
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    size_mb = args.out.stat().st_size / 1e6
    print(f"trained {args.epochs * args.steps_per_epoch} steps in {seconds / 60:.1f} min; "
          f"final loss {model.history[-1]['loss']:.4f}; saved {args.out} ({size_mb:.1f} MB)")  # fmt: skip
    for row in validate(gsn.models.load(args.out)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
