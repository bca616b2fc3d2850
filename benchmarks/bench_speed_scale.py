"""Speed and scale of gsn.tl.segment: network throughput, overlap, dask, memory, a whole slide.

Run: ``python benchmarks/bench_speed_scale.py [--parts network overlap dask memory slide] [--slide 16384]``
(all parts by default: about 40 minutes on the 2-core CPU this project is developed on, most of it
the whole slide). Every number is measured in this run; each part prints its baseline next to it.

1. ``network``: the network's GFLOP/s next to an fp32 and a bf16 matmul of the same FLOPs
   (``benchmarks/_network_throughput.py``, quick settings).
2. ``overlap``: tile overlap 0 / 25 / 50 % with the paper's mean and with Gaussian blending:
   inference seconds, and agreement with the paper's setting (50 %, mean) on the real crops of
   ``../shared/data`` and with the truth on synthetic tissue.
3. ``dask``: a 4096 x 4096 px synthetic slide segmented on a ``LocalCluster`` of 1 and of 2
   single-threaded workers, runs alternating between the two clusters (a cold first call, then three
   warm ones each); median speed-up, whether the labels are identical, and the machine's own
   two-worker ceiling on independent numpy tasks.
4. ``memory``: synthetic slides of 1024, 2048, 4096 and 8192 px a side, each segmented in a fresh
   process: peak resident memory (the whole process, imports included) and seconds per Mpx.
5. ``slide``: a synthetic slide of ``--slide`` px a side (16,384 by default, about 10 million
   transcripts) end to end in a fresh process: seconds per phase, peak memory, cells, and the time
   projected for a full Xenium slide (35,000 x 26,000 px, 40 million transcripts).

Synthetic slides (``gsn.datasets.synthetic_slide``) have Xenium's 0.2125 µm pixels and about 0.04
transcripts per pixel; they are written once under ``--workdir`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[0].parent / "shared" / "data"
REAL = ("xenium_breast_bidcell", "cosmx_lung12_fov003", "merscope_mouse_brain")
XENIUM_SLIDE = (35_000, 26_000)
XENIUM_TRANSCRIPTS = 40_000_000


def _table(rows: list[dict], title: str) -> None:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(f"\n## {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |", flush=True)


def _slide(workdir: Path, side: int) -> Path:
    import gsn

    path = workdir / f"slide{side}.zarr"
    if not path.exists():
        t0 = time.perf_counter()
        gsn.datasets.synthetic_slide(path, (side, side), tile=min(side, 2048))
        print(f"(wrote {path.name} in {time.perf_counter() - t0:.0f} s)", flush=True)
    return path


def _clean(path: Path) -> None:
    """Remove every earlier result from a slide's store (its inputs are the image and the transcripts
    only), so every run reads the same inputs: results left in the store are loaded with it and
    would count in the next run's memory."""
    import zarr

    for group in ("labels", "shapes", "tables"):
        folder = path / group
        for child in folder.iterdir() if folder.is_dir() else ():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
    zarr.consolidate_metadata(str(path))


# ------------------------------------------------------------------------------------------- child
def _peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec (VmHWM).

    Not ``getrusage().ru_maxrss``: Linux carries that over from the parent across fork and exec, so a
    child started by a parent that once held 3 GB reports at least 3 GB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, block_size: int | None) -> None:
    """Segment one store in this (fresh) process and print one JSON line (run by the parent)."""
    import spatialdata as sd

    import gsn

    gsn.settings.progress = False
    warnings.filterwarnings("ignore")
    sdata = sd.read_zarr(path)
    n_tx = int(sdata["transcripts"].shape[0].compute())
    t0 = time.perf_counter()
    gsn.tl.segment(sdata, block_size=block_size)
    seconds = time.perf_counter() - t0
    table = sdata["genesegnet_table"]
    h, w = sdata["dapi"].shape[-2:]
    print("RESULT " + json.dumps({
        "px": int(h * w), "transcripts": n_tx, "seconds": seconds, "cells": int(table.n_obs),
        "peak_mb": _peak_rss_mb(),
        "phases": table.uns["genesegnet"]["seconds"],
    }), flush=True)  # fmt: skip


def _run_child(path: Path, block_size: int | None = None) -> dict:
    _clean(path)
    args = [sys.executable, __file__, "--child", str(path)] + ([str(block_size)] if block_size else [])
    run = subprocess.run(args, capture_output=True, text=True)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"segment failed on {path}:\n{run.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


# ------------------------------------------------------------------------------------------- parts
def part_network() -> None:
    sys.path.insert(0, str(HERE))
    from _network_throughput import format_table, network_rows

    print("\n## 1. Network throughput (quick settings of benchmarks/_network_throughput.py)\n")
    print(format_table(network_rows(quick=True)), flush=True)


def _agreement(labels: np.ndarray, reference: np.ndarray) -> dict:
    from gsn.tl._metrics_core import iou_matrix, segmentation_accuracy

    fg = float(((labels > 0) & (reference > 0)).sum() / max(((labels > 0) | (reference > 0)).sum(), 1))
    acc = segmentation_accuracy(iou_matrix(labels, reference)[0]).iloc[0]
    return {"foreground IoU": round(fg, 3), "F1@0.5": round(float(acc["f1"]), 3)}


def part_overlap() -> None:
    import gsn
    from gsn.tl import match_truth

    gsn.settings.progress = False
    settings = [(o, b) for b in ("mean", "gaussian") for o in (0.5, 0.25, 0.0)]
    rows = []
    synth = gsn.datasets.synthetic(shape=(512, 512), transcripts_per_cell=200.0, seed=101)
    for overlap, blending in settings:
        key = f"o{int(overlap * 100)}{blending[0]}"
        gsn.tl.segment(synth, key_added=key, overlap=overlap, blending=blending)
        truth = match_truth(synth, key, "truth_labels").iloc[0]
        rows.append({"sample": "synthetic (truth)", "overlap": overlap, "blending": blending,
                     "inference s": synth[f"{key}_table"].uns["genesegnet"]["seconds"]["inference"],
                     "matched IoU": round(float(truth["mean_matched_iou"]), 3), "F1@0.5": round(float(truth["f1"]), 3),
                     "tx to true cell": round(float(truth["transcript_accuracy"]), 3)})  # fmt: skip
    for name in REAL:
        sdata = gsn.io.read_folder(DATA / name)
        reference = None
        for overlap, blending in settings:
            key = f"o{int(overlap * 100)}{blending[0]}"
            gsn.tl.segment(sdata, key_added=key, overlap=overlap, blending=blending)
            labels = np.asarray(sdata[f"{key}_labels"].values)
            reference = labels if reference is None else reference
            table = sdata[f"{key}_table"]
            in_cells = table.obs["n_transcripts"].sum() / table.uns["genesegnet"]["n_transcripts"]
            rows.append({"sample": f"{name.split('_')[0]} (vs 50 % mean)", "overlap": overlap, "blending": blending,
                         "inference s": table.uns["genesegnet"]["seconds"]["inference"],
                         **_agreement(labels, reference), "tx in cells": round(float(in_cells), 3)})  # fmt: skip
    _table(rows, "2. Tile overlap and blending (default model, CPU)")


def _busy_block(_: int) -> float:
    """A second of single-threaded numpy and scipy work (the machine's own two-process ceiling)."""
    from scipy import ndimage

    a = np.random.default_rng(0).random((1024, 1024)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(6):
        labels, _n = ndimage.label(ndimage.gaussian_filter(a, 3) > 0.5)
        np.bincount(labels.ravel())
        np.sort(a.ravel())
    return time.perf_counter() - t0


def _machine_ceiling(client_1, client_2) -> float:
    """Speed-up of 2 workers over 1 on independent numpy tasks, on the same two clusters."""
    seconds = {}
    for n, client in ((1, client_1), (2, client_2)):
        client.gather(client.map(_busy_block, range(n), pure=False))  # warm
        t0 = time.perf_counter()
        client.gather(client.map(_busy_block, range(8), pure=False))
        seconds[n] = time.perf_counter() - t0
    return seconds[1] / seconds[2]


def part_dask(workdir: Path, repeats: int = 3) -> None:
    import spatialdata as sd
    from distributed import Client, LocalCluster

    import gsn

    gsn.settings.progress = False
    path = _slide(workdir, 4096)
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
                for n in (1, 2)}  # fmt: skip
    clients = {n: Client(c) for n, c in clusters.items()}
    seconds: dict[tuple[int, str], list[float]] = {}
    phases, labels = {}, []
    try:
        # Runs alternate between the two clusters (both alive all along), so a change of load on this
        # shared machine hits both counts alike. "cold": a cluster's first call (its workers import
        # torch and gsn); "warm": later calls on the same cluster, as in a session of several slides.
        for run in range(repeats + 1):
            state = "cold" if run == 0 else "warm"
            for n in (1, 2):
                key = f"w{n}_{run}"
                _clean(path)  # every run writes into the same store as the first
                sdata = sd.read_zarr(path)
                t0 = time.perf_counter()
                gsn.tl.segment(sdata, client=clients[n], key_added=key)
                seconds.setdefault((n, state), []).append(time.perf_counter() - t0)
                phases[n, state] = sdata[f"{key}_table"].uns["genesegnet"]["seconds"]
                labels.append(np.asarray(sdata[f"{key}_labels"].data))
        ceiling = _machine_ceiling(clients[1], clients[2])
    finally:
        for n in (1, 2):
            clients[n].close()
            clusters[n].close()
    identical = all(np.array_equal(labels[0], other) for other in labels[1:])
    rows = []
    for state in ("cold", "warm"):
        for n in (1, 2):
            runs = seconds[n, state]
            row = {"workers": n, "workers' state": state, "runs": len(runs),
                   "seconds (median)": round(float(np.median(runs)), 1),
                   "all runs": [round(t, 1) for t in runs]}  # fmt: skip
            if n == 2:
                row["speed-up"] = round(float(np.median(seconds[1, state]) / np.median(runs)), 2)
                row["labels identical"] = identical
            row["phases (last run)"] = phases[n, state]
            rows.append(row)
    _table(rows, "3. Dask LocalCluster, 4096 x 4096 px synthetic slide, single-threaded workers")
    print(
        f"\nMachine ceiling (same clusters, 8 independent 1-s numpy tasks): 2 workers {ceiling:.2f}x one.", flush=True
    )


def part_memory(workdir: Path) -> None:
    rows = []
    for side in (1024, 2048, 4096, 8192):
        r = _run_child(_slide(workdir, side))
        rows.append({"image": f"{side} x {side}", "transcripts": r["transcripts"], "cells": r["cells"],
                     "seconds": round(r["seconds"], 1), "s / Mpx": round(r["seconds"] / (r["px"] / 1e6), 2),
                     "peak MB": round(r["peak_mb"]), "peak / 1024 px": None})  # fmt: skip
    for row in rows:
        row["peak / 1024 px"] = round(row["peak MB"] / rows[0]["peak MB"], 2)
    _table(rows, "4. Memory and time against image size (fresh process each; peak resident memory of the process)")


def part_slide(workdir: Path, side: int) -> None:
    path = _slide(workdir, side)
    r = _run_child(path)
    phases = r["phases"]
    rows = [{"phase": k, "seconds": round(v, 1)} for k, v in phases.items()]
    rows.append({"phase": "total (segment call)", "seconds": round(r["seconds"], 1)})
    _table(rows, f"5. Whole slide: {side} x {side} px, {r['transcripts']:,} transcripts, {r['cells']:,} cells, "
                 f"peak {r['peak_mb']:.0f} MB")  # fmt: skip
    per_px = (r["seconds"] - phases.get("transcripts", 0.0)) / r["px"]
    per_tx = phases.get("transcripts", 0.0) / max(r["transcripts"], 1)
    projected = per_px * XENIUM_SLIDE[0] * XENIUM_SLIDE[1] + per_tx * XENIUM_TRANSCRIPTS
    print(f"\nProjected for a full Xenium slide ({XENIUM_SLIDE[0]:,} x {XENIUM_SLIDE[1]:,} px, "
          f"{XENIUM_TRANSCRIPTS:,} transcripts) on this CPU: {projected / 60:.0f} min "
          f"(time per pixel and per transcript of this run).", flush=True)  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["network", "overlap", "dask", "memory", "slide"])
    parser.add_argument("--slide", type=int, default=16384, help="side of the whole-slide part (px)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the synthetic slides are written")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"
    print(f"# gsn speed and scale: {os.cpu_count()} CPUs, torch {torch.__version__}, CUDA: {gpu}", flush=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gsn-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        t0 = time.perf_counter()
        if part == "network":
            part_network()
        elif part == "overlap":
            part_overlap()
        elif part == "dask":
            part_dask(workdir)
        elif part == "memory":
            part_memory(workdir)
        elif part == "slide":
            part_slide(workdir, args.slide)
        print(f"({part}: {time.perf_counter() - t0:.0f} s)", flush=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
