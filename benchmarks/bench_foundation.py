"""Time and peak memory of the RNA location map and transcript assignment on 10 million transcripts.

Run: ``python benchmarks/bench_foundation.py [--n 10000000] [--side 10000]``. Each case runs in a
fresh process so its peak resident memory (ru_maxrss) is its own; the table shows the peak above
the process's memory after setup (data already built). Baselines, in the same run:

- RNA map: the authors' approach (one Gaussian window added per transcript in a Python loop), timed
  on a subset and scaled linearly to N;
- assignment: a geopandas point-in-polygon join (what polygon-based tools do), timed on a subset and
  scaled linearly to N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_sdata(n: int, side: int, seed: int = 0):
    import pandas as pd
    import spatialdata as sd
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x": rng.uniform(0, side, n).astype(np.float32),
        "y": rng.uniform(0, side, n).astype(np.float32),
        "gene": pd.Categorical.from_codes(rng.integers(0, 300, n), [f"g{i}" for i in range(300)]),
    })  # fmt: skip
    import dask.array as da

    image = Image2DModel.parse(da.zeros((1, side, side), dtype=np.uint16, chunks=(1, 4096, 4096)),
                               dims=("c", "y", "x"), c_coords=["DAPI"])  # fmt: skip
    cell = 20  # square cells of 20 px
    rows = np.arange(side) // cell
    labels = (rows[:, None] * (side // cell + 1) + rows[None, :] + 1).astype(np.int32)
    return sd.SpatialData(
        images={"dapi": image},
        labels={"cells_labels": Labels2DModel.parse(labels, dims=("y", "x"))},
        points={"transcripts": PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene")},
    )


def case(name: str, n: int, side: int) -> dict:
    warnings.filterwarnings("ignore")
    import gsn

    gsn.settings.progress = False
    sdata = make_sdata(n, side)
    base = peak_mb()
    t = time.perf_counter()
    if name == "rna_location_map (lazy, 4096 px chunks)":
        element = gsn.pp.rna_location_map(sdata, inplace=False, chunks=4096)
        total = float(element.data.sum().compute())
        assert total > 0
    elif name == "rna_location_map (in memory)":
        gsn.pp._rna_map._LAZY_PIXELS = 1 << 62
        element = gsn.pp.rna_location_map(sdata, inplace=False)
        np.asarray(element.data)
    elif name == "assign_transcripts":
        t = time.perf_counter()
        gsn.tl.assign_transcripts(sdata, "cells_labels")
        ids = sdata["transcripts"]["cells_cell_id"].compute()
        assert (ids > 0).mean() > 0.999  # float32 rounding puts a few at x == side, outside
    elif name.startswith("baseline: per-transcript Gaussian loop"):
        sub = min(n, 20_000)
        df = sdata["transcripts"].head(sub, npartitions=-1)
        out = np.zeros((side, side), np.float32)
        r = int(np.ceil(3.035 * 7))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        g = np.exp(-(xx**2 + yy**2) / (2 * 49.0)).astype(np.float32)
        t = time.perf_counter()
        for x, y in zip(df.x.astype(int), df.y.astype(int), strict=True):
            y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, side), max(x - r, 0), min(x + r + 1, side)
            win = g[y0 - y + r : y1 - y + r, x0 - x + r : x1 - x + r]
            np.maximum(out[y0:y1, x0:x1], win, out=out[y0:y1, x0:x1])
        return {"case": name, "seconds": (time.perf_counter() - t) * n / sub, "peak_mb": peak_mb() - base,
                "note": f"timed on {sub:,}, scaled to {n:,}"}  # fmt: skip
    elif name.startswith("baseline: geopandas point-in-polygon"):
        import geopandas as gpd

        sub = min(n, 1_000_000)
        df = sdata["transcripts"].head(sub, npartitions=-1)
        polys = gsn.tl.labels_to_polygons(np.asarray(sdata["cells_labels"].values[:2000, :2000]), progress=False)
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(df.x, df.y))
        pts = pts[(df.x.to_numpy() < 2000) & (df.y.to_numpy() < 2000)]
        t = time.perf_counter()
        gpd.sjoin(pts, polys, predicate="within")
        k = len(pts)
        return {"case": name, "seconds": (time.perf_counter() - t) * n / k, "peak_mb": peak_mb() - base,
                "note": f"timed on {k:,} points / {len(polys):,} cells, scaled to {n:,}"}  # fmt: skip
    return {"case": name, "seconds": time.perf_counter() - t, "peak_mb": peak_mb() - base, "note": ""}


CASES = [
    "rna_location_map (lazy, 4096 px chunks)",
    "rna_location_map (in memory)",
    "baseline: per-transcript Gaussian loop (authors' code)",
    "assign_transcripts",
    "baseline: geopandas point-in-polygon join",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--case")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.side)))
        return
    print(f"{args.n:,} transcripts on a {args.side} x {args.side} px image ({args.side**2 / 1e6:.0f} Mpx)\n")
    print(f"| {'case':<55} | {'seconds':>8} | {'peak MB':>8} | note")
    print(f"|{'-' * 57}|{'-' * 10}|{'-' * 10}|------")
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name, "--n", str(args.n), "--side", str(args.side)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {row['case']:<55} | {row['seconds']:8.2f} | {row['peak_mb']:8.0f} | {row['note']}", flush=True)


if __name__ == "__main__":
    main()
