# %% [markdown]
# # Comparing segmentations without ground truth: the panels of Fig. 2
#
# Real tissue has no ground truth, so the GeneSegNet paper judges a segmentation by label-free
# metrics (its Fig. 2c-j): how many molecules near a cell end up inside it (cell calling), which
# pixels and molecules the cells cover, how many genes each cell detects, the cells' shapes, and
# whether gene-gene correlations reproduce between replicate samples. `gsn.tl.compare` computes all
# of them into one tidy table; `gsn.pl` draws them, one colour per segmentation in every panel.
#
# Here we compare two segmentations of a real Xenium breast-cancer crop: the Cellpose-nuclei prior
# shipped with the crop and the watershed baseline of `gsn.pp.watershed`. A GeneSegNet result
# (`gsn.tl.segment`, prefix `genesegnet`) is compared in exactly the same way.
#
# Run it as a script (`python tutorials/03_compare_segmentations.py`) or open it in Jupyter with jupytext.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import scanpy as sc
import squidpy as sq

import gsn

DATA = Path(os.environ.get("GSN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
sdata = gsn.io.read_folder(DATA / "xenium_breast_bidcell")
gsn.pp.watershed(sdata)
gsn.tl.cells_from_labels(sdata, "watershed_labels")
gsn.tl.cells_from_labels(sdata, "prior_labels")
keys = ["prior", "watershed"]

# %% [markdown]
# ## The segmentations
#
# `gsn.pl.segmentation` draws the outlines over the nucleus image, with transcripts inside (yellow)
# and outside (blue) the cells of each panel (Fig. 2a-b).

# %%
gsn.pl.segmentation(sdata, keys, region=(350, 650, 600, 900), point_size=4)

# %% [markdown]
# ## One table of metrics
#
# `per_cell=True` adds one row per cell for the per-cell metrics (area, elongation, convexity, genes
# and transcripts per cell), which the histogram and the violins need. Everything else is a summary.

# %%
table = gsn.tl.compare(sdata, keys, per_cell=True)
summary = table[table["stat"].isin(["value", "fraction", "median"]) & table["level"].isna()]
summary.pivot(index="metric", columns="key", values="value")

# %% [markdown]
# ## All panels at once
#
# `gsn.pl.compare` lays out the number of cells, cell calling (2c), the pixel and transcript coverage
# curves by pixel value (2d, 2e), the genes-per-cell histogram (2f) and the area, elongation and
# convexity distributions (2g-i). It accepts the table or the SpatialData object itself.

# %%
gsn.pl.compare(table)

# %% [markdown]
# Every panel is also its own function, with scanpy's conventions: pass `ax=` to draw into your own
# figure, `show=False` to get the Axes back, `return_fig=True` for the Figure. Nothing is saved to
# disk unless you call `savefig`.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
gsn.pl.cell_calling(table, ax=axes[0])
gsn.pl.rna_coverage(table, ax=axes[1])
gsn.pl.morphology(table, "convexity", ax=axes[2])
cell_calling = table[(table["metric"] == "cell_calling") & (table["stat"] == "ratio")]
assert [p.get_height() for p in axes[0].patches] == list(cell_calling["value"])  # bars are the metric

# %% [markdown]
# The prior covers more transcripts (higher cell calling, 39 % against 29 % of molecules in cells);
# the watershed cells are smaller nuclei and smoother (higher convexity): the prior's outlines are
# blocky.
#
# ## Gene-gene correlation reproducibility (Fig. 2j)
#
# Two fields of view of the same CosMx lung sample serve as replicates. For every pair of genes, its
# correlation across cells in one field is plotted against that in the other; `r` in the title is
# `gsn.tl.correlation_reproducibility`. The paper's filters for this dataset keep cells with at least
# 30 detected genes and genes seen in at least 5 % of them; negative-control probes are left out.

# %%
fovs = {}
for fov in ("fov002", "fov003"):
    s = gsn.io.read_folder(DATA / f"cosmx_lung12_{fov}")
    gsn.pp.watershed(s)
    gsn.tl.cells_from_labels(s, "prior_labels")
    gsn.tl.cells_from_labels(s, "watershed_labels")
    fovs[f"FOV {fov[-1]}"] = s
filters = {"min_genes": 30, "exclude": "^(NegPrb|NegControl|Blank)"}
gsn.pl.correlation_reproducibility(fovs, keys, **filters)

# %% [markdown]
# With about 60 cells per field, the correlations of hundreds of sparse genes are mostly noise, so
# `r` is close to 0 for both segmentations; the paper's samples hold far more cells. With replicates
# at hand, `gsn.pl.compare(sdata_a, keys, replicates=[sdata_b])` adds the reproducibility bars as a
# last panel.

# %%
fov2, fov3 = fovs.values()
gsn.pl.compare(fov2, keys, replicates=[fov3], correlation_kwargs=filters)

# %% [markdown]
# ## Morphology on an embedding
#
# `gsn.tl.morphology` writes `area`, `perimeter`, `elongation` and `convexity` into `obs` of the
# segmentation's table, which also has the centroids in `obsm["spatial"]`. So scanpy's and squidpy's
# own plots colour cells by shape without any gsn-specific code.

# %%
gsn.tl.morphology(sdata, "prior")
adata = sdata["prior_table"].copy()
adata = adata[adata.obs["n_transcripts"] >= 10].copy()
sc.pp.normalize_total(adata)
sc.pp.log1p(adata)
sc.pp.pca(adata, n_comps=20)
sc.pp.neighbors(adata, random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color=["area", "elongation", "convexity"], cmap="viridis", show=False)

# %%
sq.pl.spatial_scatter(adata, color=["area", "convexity"], shape=None, size=20, cmap="viridis")

# %% [markdown]
# ## Training history
#
# After `model = gsn.tl.train(...)`, `gsn.pl.training_history(model)` draws the loss of every epoch
# (total and its confidence, centre and offset terms); with recursive label refinement it adds the
# mean IoU between consecutive rounds (the paper stops above 0.93) and the cells per round. The
# [gallery](../docs/gallery.md) shows every plot on real data.

# %%
plt.close("all")
