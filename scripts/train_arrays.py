"""Train a model from arrays exported by ``train_default_model.py --export DIR``.

For machines without spatialdata (e.g. a lent GPU box that has only torch, numpy, scipy and
scikit-image): gsn's top-level package (which imports spatialdata) is bypassed and only
``gsn.models`` is loaded. Usage: ``python scripts/train_arrays.py DIR OUT.pt --epochs 80 --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def import_models():
    """Import ``gsn.models`` without running ``gsn/__init__.py``."""
    pkg = types.ModuleType("gsn")
    pkg.__path__ = [str(SRC / "gsn")]
    pkg.__version__ = "0.1.0"
    sys.modules["gsn"] = pkg
    import gsn.models

    return gsn.models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = import_models()
    import torch

    kwargs = json.loads((args.folder / "train_kwargs.json").read_text())
    for name in ("epochs", "steps_per_epoch"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.crop is not None:
        kwargs["crop_size"] = args.crop
    aug = models.Augmentation(tuple(kwargs.pop("scale_range")), kwargs.pop("rotate"), kwargs.pop("flip"))
    for name in ("device", "seed", "progress"):
        kwargs.pop(name, None)
    data = np.load(args.folder / "samples.npz")
    n = len([k for k in data.files if k.startswith("inputs")])
    samples = [models.TrainingSample(data[f"inputs{i}"], data[f"labels{i}"], name=f"sample {i}") for i in range(n)]
    model = models.load(args.folder / "untrained.pt")
    start = time.perf_counter()
    models.train_network(model, samples, augmentation=aug, device=args.device, seed=args.seed, progress=False, **kwargs)
    seconds = time.perf_counter() - start
    dev = models.resolve_device(args.device)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    model.config.train_params.update(epochs=kwargs["epochs"], steps_per_epoch=kwargs["steps_per_epoch"],
                                     crop_size=kwargs["crop_size"], hardware=name,
                                     train_seconds=round(seconds, 1))  # fmt: skip
    model.to("cpu").save(args.out)
    print(f"trained {kwargs['epochs'] * kwargs['steps_per_epoch']} steps of {kwargs['crop_size']} px on {name} "
          f"in {seconds:.0f} s; final loss {model.history[-1]['loss']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
