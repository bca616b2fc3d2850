# %% [markdown]
# # Segmenting cells with GeneSegNet: the default model, your own model, and recursive training
#
# GeneSegNet reads two channels: the nucleus stain and an RNA location map built from the transcripts.
# This tutorial segments a CosMx field of view with the model that ships inside gsn, then trains a
# model on the field of view's own (noisy) vendor labels with the paper's recursive label refinement,
# and compares the results. Training here is kept to a few dozen steps so the tutorial runs in about
# a minute on a laptop CPU; for real use train for thousands of steps (or on a GPU,
# `device="cuda"`), as `scripts/train_default_model.py` does.

# %%
import os
from pathlib import Path

import torch

import gsn

torch.manual_seed(0)
DATA = Path(os.environ.get("GSN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
sdata = gsn.io.read_folder(DATA / "cosmx_lung12_fov003")

# %% [markdown]
# ## The default model
#
# `gsn.tl.segment` with no model uses the shipped weights (see docs/default_model.md). The image is
# resampled to the model's pixel size (0.4 µm) using the pixel size recorded in the image's
# transformation, and the labels come back on the image's own pixel grid.

# %%
gsn.tl.segment(sdata)
table = sdata["genesegnet_table"]
print(f"{table.n_obs} cells; run parameters:", {k: table.uns["genesegnet"][k] for k in ("tile", "overlap", "rescale_factor")})

# %% [markdown]
# ## Fine-tuning on the sample's own prior, with recursive refinement
#
# Passing `model=` continues training from an existing model (here the default one), so a few
# dozen steps at a small learning rate adapt it to the sample's own labels; without it training starts from
# random weights and needs thousands of steps. Each round trains the network on the current labels, predicts on the training image, decodes cells,
# refines them with the level set and uses them as the next labels; training stops when two rounds
# agree (mean best IoU above `iou_stop`) or after `max_rounds`. The history of every epoch and round
# is kept on the model.

# %%
model = gsn.tl.train(
    sdata, labels_key="prior_labels", model=gsn.models.load("default"), crop_size=96, epochs=2, steps_per_epoch=10,
    batch_size=4, lr=1e-4, max_rounds=2, device="cpu",
)
print(model)
gsn.tl.segment(sdata, model, key_added="own")

# %% [markdown]
# ## Compare
#
# The prior, the default model and the quickly trained model, with the paper's label-free metrics.

# %%
gsn.tl.cells_from_labels(sdata, "prior_labels")
summary = gsn.tl.compare(sdata, keys=["prior", "genesegnet", "own"])
calling = summary[(summary.metric == "cell_calling") & (summary.stat == "ratio")]
print(calling.pivot(index="key", columns="level", values="value").round(2))
gsn.pl.training_history(model, show=False)
gsn.pl.segmentation(sdata, ["prior", "genesegnet", "own"], show=False)

# %% [markdown]
# `model.save("my_model.pt")` keeps the weights with everything needed to reproduce the inputs;
# `gsn.models.load("my_model.pt")` reads it back.
