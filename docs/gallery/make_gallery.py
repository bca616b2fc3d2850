"""Render every image of docs/gallery.md from the real crops in ../shared/data.

    python docs/gallery/make_gallery.py            # all images (training takes minutes on a CPU)
    python docs/gallery/make_gallery.py --no-train # everything except the training history

Images are written next to this script at 100 dpi.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import gsn  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("GSN_DATA", HERE.parents[2] / "shared" / "data"))
KEYS = ["prior", "watershed"]
FILTERS = {"min_genes": 30, "exclude": "^(NegPrb|NegControl|Blank)"}  # the paper's CosMx NSCLC filters
DPI = 100


def save(fig, name: str, dpi: int = DPI) -> None:
    path = HERE / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    from PIL import Image  # 256-colour palette: a third of the size, no visible change

    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path.name}: {path.stat().st_size / 1024:.0f} KB")


def baseline(name: str):
    sdata = gsn.io.read_folder(DATA / name)
    gsn.pp.watershed(sdata)
    for key in KEYS:
        gsn.tl.cells_from_labels(sdata, f"{key}_labels")
    return sdata


def metric_panels() -> None:
    sdata = baseline("xenium_breast_bidcell")
    save(gsn.pl.segmentation(sdata, KEYS, region=(350, 650, 600, 900), point_size=4,
                                  return_fig=True), "segmentation_xenium")  # fmt: skip
    table = gsn.tl.compare(sdata, KEYS, per_cell=True)
    save(gsn.pl.compare(table, return_fig=True), "compare_xenium")
    save(gsn.pl.cell_calling(table, return_fig=True), "cell_calling_xenium")
    save(gsn.pl.pixel_coverage(table, return_fig=True), "pixel_coverage_xenium")
    save(gsn.pl.rna_coverage(table, return_fig=True), "rna_coverage_xenium")
    save(gsn.pl.genes_per_cell(table, return_fig=True), "genes_per_cell_xenium")
    save(gsn.pl.morphology(table, return_fig=True), "morphology_xenium")

    # morphology on an embedding, with scanpy's and squidpy's own plots
    import scanpy as sc
    import squidpy as sq

    gsn.tl.morphology(sdata, "prior")
    adata = sdata["prior_table"].copy()
    adata = adata[adata.obs["n_transcripts"] >= 10].copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=20)
    sc.pp.neighbors(adata, random_state=0)
    sc.tl.umap(adata, random_state=0)
    sc.pl.umap(adata, color=["area", "elongation", "convexity"], cmap="viridis", show=False)
    save(plt.gcf(), "umap_morphology_xenium", dpi=80)
    sq.pl.spatial_scatter(adata, color=["area", "convexity"], shape=None, size=20, cmap="viridis")
    save(plt.gcf(), "spatial_morphology_xenium")

    fovs = {f"FOV {fov[-1]}": baseline(f"cosmx_lung12_{fov}") for fov in ("fov002", "fov003")}
    fig = gsn.pl.correlation_reproducibility(fovs, KEYS, return_fig=True, **FILTERS)
    save(fig, "correlation_reproducibility_cosmx")
    fov2, fov3 = fovs.values()
    save(gsn.pl.compare(fov2, KEYS, replicates=[fov3], correlation_kwargs=FILTERS, return_fig=True), "compare_cosmx")


def training(resume: str | None = None) -> None:
    """Train the slim network on CosMx FOV 2's prior labels on the CPU and plot its history.

    20 epochs of 10 steps (batch 8, 128 px crops) at 0.36 um per pixel (the image is 0.18 um: half
    resolution), about 10 minutes on two CPU cores; ``resume`` plots a model saved from this run.
    """
    if resume:
        model = gsn.models.load(resume)
    else:
        train = getattr(gsn.tl, "train", None)
        if train is None:  # not exported yet
            from gsn.tl._train import train

        sdata = gsn.io.read_folder(DATA / "cosmx_lung12_fov002")
        model = train(sdata, labels_key="prior_labels", widths=gsn.models.SLIM_WIDTHS, epochs=20, steps_per_epoch=10,
                      batch_size=8, crop_size=128, pixel_size=0.36, device="cpu", seed=1)  # fmt: skip
    save(gsn.pl.training_history(model, return_fig=True), "training_history_cosmx")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--only-train", action="store_true")
    parser.add_argument("--resume", help="plot the history of this saved model instead of training")
    args = parser.parse_args()
    if not args.only_train:
        metric_panels()
    if not args.no_train:
        training(resume=args.resume)
