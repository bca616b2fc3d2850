# %% [markdown]
# # From a folder of transcripts and a DAPI image to an AnnData for scanpy
#
# This tutorial reads a real Xenium crop, builds the RNA location map that GeneSegNet feeds to its
# network, segments nuclei with the paper's watershed baseline, assigns every transcript to a cell and
# clusters the cells with scanpy. The same calls work on any `SpatialData` object, including the ones
# spatialdata-io's readers produce (multiscale images, transcripts in microns).
#
# Run it as a script (`python tutorials/01_baseline_pipeline.py`) or open it in Jupyter with jupytext.

# %%
import os
from pathlib import Path

import numpy as np
import scanpy as sc

import gsn

DATA = Path(os.environ.get("GSN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
sdata = gsn.io.read_folder(DATA / "xenium_breast_bidcell")
sdata

# %% [markdown]
# The image is in pixels, and a `Scale` transformation to the `global` coordinate system records the
# pixel size (0.2125 µm). Transcripts carry the same transformation; gsn maps them onto the image
# through these transformations, so transcripts in microns work the same way.

# %%
gsn.pp.rna_location_map(sdata, sigma=7)  # Eq. 5 of the paper: clipped sum of Gaussians
rna = sdata["gsn_rna_map"].values[0]
print(f"RNA map: {rna.shape}, {np.mean(rna > 0.5):.1%} of pixels above 0.5")

# %% [markdown]
# ## The watershed baseline and the prior
#
# `gsn.pp.watershed` writes a labels element. `gsn.tl.cells_from_labels` turns any labels element —
# here the watershed result and the Cellpose nuclei prior shipped with the crop — into polygons, a
# counts table and a per-transcript cell column.

# %%
gsn.pp.watershed(sdata)
gsn.tl.cells_from_labels(sdata, "watershed_labels")
gsn.tl.cells_from_labels(sdata, "prior_labels")
for key in ("watershed", "prior"):
    table = sdata[f"{key}_table"]
    inside = (sdata["transcripts"][f"{key}_cell_id"].compute() > 0).mean()
    print(f"{key:>10}: {table.n_obs} cells, median area {np.median(table.obs['area']):.0f} px, {inside:.1%} of transcripts in cells")

# %% [markdown]
# Ids are stable: the label value, the polygon index and `obs["cell_id"]` are the same number, and
# the Xenium `cell_id` column on the transcripts is left untouched.

# %%
table = sdata["watershed_table"]
assert list(table.obs["cell_id"]) == list(sdata["watershed_boundaries"].index)

# %% [markdown]
# ## Clustering with scanpy

# %%
adata = table[table.obs["n_transcripts"] >= 10].copy()
sc.pp.normalize_total(adata)
sc.pp.log1p(adata)
sc.pp.pca(adata, n_comps=20)
sc.pp.neighbors(adata)
sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)
print(adata.obs["leiden"].value_counts().head())

# %% [markdown]
# ## Saving
#
# `sdata.write("xenium.zarr")` writes everything; once an object is backed by zarr, later gsn calls
# write their new elements into the same store without touching the existing ones.
