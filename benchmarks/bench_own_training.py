"""Own-sample training on a real crop: fine-tune with gsn.tl.train, segment, score against nuclei expansion.

Run: ``python benchmarks/bench_own_training.py FOLDER VARIANT JSON_KWARGS`` (e.g.
``xenium_breast_bidcell nuclei '{"prior": "cells", "crop_size": 128}'``; variant ``gap2`` trains on the
prior grown with ``grow_cells`` and eroded by 2 px). Prints one RESULT line: train seconds, and for the
own model with and without growth and the prior: cells, fraction in cells, MECR and the expansion
curve's MECR at that fraction. One torch thread (the machine is shared; see issue notes).
"""

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

import gsn

torch.set_num_threads(1)

warnings.filterwarnings("ignore")
logging.basicConfig(level=logging.WARNING)
logging.getLogger("gsn").setLevel(logging.INFO)
folder, variant = sys.argv[1], sys.argv[2]
kw = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
sdata = gsn.io.read_folder(str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / folder))
labels_key = "prior_labels"
if variant.startswith("gap"):
    from gsn.models._recursive import erode_labels

    gsn.tl.grow_cells(sdata, "prior_labels", key_added="pg")
    lab = erode_labels(np.asarray(sdata["pg_labels"].values), int(kw.pop("gap_px", 2)))
    sdata.labels["gap_labels"] = Labels2DModel.parse(
        lab, dims=("y", "x"), transformations=get_transformation(sdata["prior_labels"], get_all=True)
    )
    labels_key = "gap_labels"
t0 = time.perf_counter()
c0 = time.process_time()
model = gsn.tl.train(sdata, labels_key=labels_key, **kw)
t_train = time.perf_counter() - t0
c_train = time.process_time() - c0
t0 = time.perf_counter()
gsn.tl.segment(sdata, model, key_added="own")
t_seg = time.perf_counter() - t0
gsn.tl.segment(sdata, model, key_added="ownng", grow=False)
gsn.tl.cells_from_labels(sdata, "prior_labels", key_added="prior")
markers = gsn.tl.marker_genes(sdata, "prior")
curve = gsn.tl.expansion_curve(sdata, "prior_labels", markers)
tab = gsn.tl.purity(sdata, ["own", "ownng", "prior"], markers, reference=curve)
out = {
    "folder": folder,
    "variant": variant,
    "train_s": round(t_train, 1),
    "train_cpu_s": round(c_train, 1),
    "seg_s": round(t_seg, 1),
}
out["table"] = tab.round(4).to_dict("records")
out["rounds"] = [
    {k: r[k] for k in ("round", "n_cells_in", "n_cells", "mean_area_in", "mean_area", "mean_iou") if k in r}
    for r in model.rounds
]
print("RESULT", json.dumps(out), flush=True)
