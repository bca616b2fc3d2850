"""Shared fixtures: a tiny seeded SpatialData built by hand, and paths to the real crops."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel
from spatialdata.transformations import Scale

os.environ.setdefault("MPLBACKEND", "Agg")
logging.getLogger("ome_zarr").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", category=UserWarning, module="zarr")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIXEL_SIZE = 0.5


def data_folder(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"Shared data folder {path} is missing; tests read ../shared/data in place.")
    return path


def tiny_arrays(seed: int = 0):
    """Three square cells on a 64 x 80 image with a nucleus each, and 300 transcripts."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((64, 80), np.int32)
    labels[5:25, 5:25] = 1
    labels[5:25, 25:45] = 2  # touches cell 1
    labels[35:60, 50:75] = 3
    nuclei = np.zeros_like(labels)
    nuclei[10:20, 10:20] = 1
    nuclei[10:20, 30:40] = 2
    nuclei[42:54, 57:69] = 3
    image = (nuclei > 0).astype(np.float32) * 1000 + rng.normal(100, 5, labels.shape)
    image = np.clip(image, 0, None).astype(np.uint16)
    n = 300
    x = rng.uniform(0, 80, n).astype(np.float32)
    y = rng.uniform(0, 64, n).astype(np.float32)
    genes = rng.choice(["A", "B", "C", "D"], n)
    return image, labels, nuclei, pd.DataFrame({"x": x, "y": y, "gene": pd.Categorical(genes), "cell_id": -1})


def tiny_sdata(seed: int = 0) -> sd.SpatialData:
    image, labels, nuclei, df = tiny_arrays(seed)
    t = {"global": Scale([PIXEL_SIZE, PIXEL_SIZE], axes=("y", "x"))}
    return sd.SpatialData(
        images={"dapi": Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=t)},
        labels={
            "truth_labels": Labels2DModel.parse(labels, dims=("y", "x"), transformations=t),
            "nuclei_labels": Labels2DModel.parse(nuclei, dims=("y", "x"), transformations=t),
        },
        points={
            "transcripts": PointsModel.parse(
                df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations=t
            )
        },  # fmt: skip
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: tiny networks gain nothing from threads, and on a busy
    machine OpenMP threads waiting on each other can be many times slower than one.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def sdata() -> sd.SpatialData:
    return tiny_sdata()
