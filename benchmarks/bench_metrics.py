"""Time every segmentation metric on 100k cells and 10 million transcripts.

Run: ``python benchmarks/bench_metrics.py [--side 8000] [--cells 100000] [--transcripts 10000000] [--real]``.

The data are synthesised directly as arrays: a Voronoi-like label image (``--cells`` seeds on a
``--side`` x ``--side`` grid, each cell cut to 14 px around its seed, about 62 % of pixels in cells),
a "truth" from the same seeds jittered by 1.5 px, a uint16 image and uniform transcripts of 300
genes. Each metric's pure array function is timed, plus :func:`gsn.tl.compare` end to end on a
SpatialData wrapper (transcript loading from dask included). A baseline, the per-cell loop of the
reference code (``skimage.measure.regionprops`` perimeter + ``scipy.spatial.ConvexHull``), is timed
on a crop and scaled to the full cell count.

``--real`` also runs :func:`gsn.tl.compare` on the Xenium crop of ``../shared/data`` (prior labels vs
watershed) and the CosMx gene-gene correlation reproducibility (prior labels, two fields of view).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def voronoi_labels(side: int, seeds_yx: np.ndarray, max_dist: float = 14.0) -> np.ndarray:
    """Nearest-seed label image, background farther than ``max_dist`` from every seed."""
    seeds = np.zeros((side, side), np.int32)
    ys = np.clip(np.round(seeds_yx[:, 0]).astype(int), 0, side - 1)
    xs = np.clip(np.round(seeds_yx[:, 1]).astype(int), 0, side - 1)
    seeds[ys, xs] = np.arange(1, len(seeds_yx) + 1, dtype=np.int32)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    labels[dist > max_dist] = 0
    return labels


class Timer:
    def __init__(self):
        self.rows = []

    def __call__(self, name: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t
        self.rows.append((name, dt))
        print(f"  {name:<66s} {dt:8.2f} s", flush=True)
        return out


def baseline_morphology(labels: np.ndarray) -> float:
    """The reference code's per-cell approach: regionprops perimeter and a ConvexHull per cell."""
    from scipy.spatial import ConvexHull
    from skimage.measure import regionprops
    from skimage.segmentation import find_boundaries

    t = time.perf_counter()
    for r in regionprops(labels):
        mask = r.image
        _ = r.perimeter
        ys, xs = np.nonzero(find_boundaries(np.pad(mask, 1), mode="inner"))
        if len(xs) >= 3 and np.ptp(xs) and np.ptp(ys):
            ConvexHull(np.stack([xs, ys], 1))
            np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
    return time.perf_counter() - t


def synthetic(side: int, n_cells: int, n_tx: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, side, (n_cells, 2))
    labels = voronoi_labels(side, seeds)
    truth = voronoi_labels(side, seeds + rng.normal(0, 1.5, seeds.shape))
    image = rng.integers(0, 200, (side, side), dtype=np.uint16)
    image[labels > 0] += 800
    x = rng.uniform(0, side, n_tx).astype(np.float32)
    y = rng.uniform(0, side, n_tx).astype(np.float32)
    genes = rng.integers(0, 300, n_tx)
    return labels, truth, image, x, y, genes


def bench_synthetic(side: int, n_cells: int, n_tx: int, baseline: bool) -> pd.DataFrame:
    from gsn.tl._correlation import correlation_reproducibility, gene_correlation_from_counts
    from gsn.tl._metrics_core import (
        cell_calling_from_labels,
        counts_from_ids,
        iou_matrix,
        label_at,
        match_iou,
        morphology_from_labels,
        n_genes_from_counts,
        pixel_coverage_from_labels,
        rna_coverage_from_labels,
        segmentation_accuracy,
        transcript_accuracy,
    )

    print(f"synthesising {side} x {side} labels, {n_cells} seeds, {n_tx} transcripts ...", flush=True)
    t = time.perf_counter()
    labels, truth, image, x, y, genes = synthetic(side, n_cells, n_tx)
    n_present = len(np.unique(labels)) - 1
    print(f"  done in {time.perf_counter() - t:.1f} s: {n_present} cells, {np.mean(labels > 0):.0%} of pixels in cells")
    timer = Timer()
    timer("cell_calling (deltas 3, 5, 7)", cell_calling_from_labels, labels, x, y)
    morph = timer("morphology (area, perimeter, hull, elongation, convexity)", morphology_from_labels, labels)
    assert len(morph) == n_present
    timer("pixel_coverage (10 quantile bins, uint16)", pixel_coverage_from_labels, labels, image)
    timer("pixel_coverage (10 quantile bins, float32)", pixel_coverage_from_labels, labels, image.astype(np.float32))
    timer("rna_coverage (10 quantile bins)", rna_coverage_from_labels, labels, image, x, y)
    cell = timer("transcript -> cell lookup", label_at, labels, x, y)
    counts = timer("counts matrix (cells x 300 genes)", counts_from_ids, cell, genes, int(labels.max()) + 1, 300)
    timer("genes_per_cell", n_genes_from_counts, counts)
    names = [f"g{i}" for i in range(300)]
    timer("gene_correlation (min_genes=5, 5 %)", gene_correlation_from_counts, counts, names, min_genes=5)
    import anndata as ad

    adata = ad.AnnData(X=counts[1:])
    adata.var_names = names
    adata.obs["half"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "a", "b"))
    timer("correlation_reproducibility (2 halves, groupby)", correlation_reproducibility, adata, groupby="half")

    def accuracy():
        iou, pred_ids, true_ids = iou_matrix(labels, truth)
        acc = segmentation_accuracy(iou)
        rows, cols, _ = match_iou(iou, 0.5)
        tr = transcript_accuracy(cell, label_at(truth, x, y), pred_ids, true_ids, rows, cols)
        return acc, tr

    acc, tr = timer("match_truth (IoU, 9 thresholds, transcript accuracy)", accuracy)
    print(
        f"  (synthetic accuracy: AP@0.5 {acc.loc[0.5, 'average_precision']:.3f}, "
        f"AP@0.9 {acc.loc[0.9, 'average_precision']:.3f}, transcripts {tr['transcript_accuracy']:.3f})"
    )

    # end to end through SpatialData
    import spatialdata as sd
    from spatialdata.models import Image2DModel, Labels2DModel, PointsModel

    from gsn.tl._compare import compare

    df = pd.DataFrame({"x": x, "y": y, "gene": pd.Categorical.from_codes(genes, names)})
    sdata = sd.SpatialData(
        images={"dapi": Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"])},
        labels={"seg_labels": Labels2DModel.parse(labels, dims=("y", "x")),
                "truth_labels": Labels2DModel.parse(truth, dims=("y", "x"))},
        points={"transcripts": PointsModel.parse(df, feature_key="gene", npartitions=8)},
    )  # fmt: skip
    del df
    table = timer("compare(sdata, ['seg']) end to end (no table: counts from tx)", compare, sdata, ["seg"])
    timer("compare(..., truth_key='truth_labels') end to end", compare, sdata, ["seg"], truth_key="truth_labels")
    assert len(table)
    if baseline:
        crop = labels[: side // 4, : side // 4]
        crop, _, _ = __import__("skimage.segmentation", fromlist=["relabel_sequential"]).relabel_sequential(crop)
        n_crop = int(crop.max())
        dt = baseline_morphology(crop)
        scaled = dt * n_present / max(n_crop, 1)
        print(
            f"  {'baseline: per-cell regionprops + ConvexHull (scaled)':<66s} {scaled:8.2f} s "
            f"({dt:.1f} s for {n_crop} cells)"
        )
        timer.rows.append(("baseline: per-cell regionprops + ConvexHull (scaled from crop)", scaled))
    out = pd.DataFrame(timer.rows, columns=["step", "seconds"])
    print(f"peak resident memory {peak_gb():.1f} GB")
    return out


def bench_real() -> None:
    import gsn
    from gsn.tl._compare import compare
    from gsn.tl._correlation import correlation_reproducibility

    pd.set_option("display.width", 160)
    folder = DATA / "xenium_breast_bidcell"
    if not folder.exists():
        print(f"{folder} missing; skipping the real-data part")
        return
    sdata = gsn.io.read_folder(folder)
    gsn.tl.cells_from_labels(sdata, "prior_labels")
    gsn.pp.watershed(sdata)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    t = time.perf_counter()
    table = compare(sdata, ["prior", "watershed"])
    print(f"\nXenium crop: compare(prior, watershed) in {time.perf_counter() - t:.2f} s")
    keep = table["stat"].isin(["ratio", "value", "fraction", "median"]) & ~table["metric"].isin(
        ["pixel_coverage", "rna_coverage"]
    )
    wide = (
        table[keep]
        .assign(level=table["level"].fillna(-1))
        .pivot_table(index=["metric", "stat", "level"], columns="key", values="value", observed=True)
    )
    print(wide.round(3).to_string())
    curves = table[table["metric"].isin(["pixel_coverage", "rna_coverage"])].pivot_table(
        index=["metric", "level", "lower", "upper"], columns="key", values="value", observed=True
    )
    print(curves.round(3).to_string())
    fovs = []
    for name in ("cosmx_lung12_fov002", "cosmx_lung12_fov003"):
        s = gsn.io.read_folder(DATA / name)
        gsn.tl.cells_from_labels(s, "prior_labels")
        fovs.append(s)
    print("\nCosMx FOV 2 vs FOV 3, prior labels, gene-gene correlation reproducibility:")
    settings = ({"min_genes": 30}, {"min_genes": 30, "exclude": "^NegPrb"}, {"min_genes": 30, "min_cell_fraction": 0.2})
    for kwargs in settings:
        p = correlation_reproducibility(fovs, "prior", return_pairs=True, **kwargs).iloc[0]
        print(
            f"  {kwargs}: r = {p['r']:.4f} over {p['n_pairs']} gene pairs "
            f"({p['n_genes']} genes; {p['n_cells_a']} and {p['n_cells_b']} cells)"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--transcripts", type=int, default=10_000_000)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--real", action="store_true", help="also run the real-data checks on ../shared/data")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("gsn").setLevel(logging.WARNING)
    table = bench_synthetic(args.side, args.cells, args.transcripts, baseline=not args.no_baseline)
    print(f"\n| step ({args.cells} seeds, {args.transcripts} transcripts, {args.side}^2 px) | seconds |\n|---|---:|")
    for step, seconds in table.itertuples(index=False):
        print(f"| {step} | {seconds:.2f} |")
    if args.real:
        bench_real()


if __name__ == "__main__":
    sys.exit(main())
