"""End-to-end tests of `gsn segment`, `gsn train`, `gsn compare` and `gsn --version` on a Xenium zarr store."""

from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from tests.stores import XENIUM_PIXEL_SIZE, write_xenium_store
from typer.testing import CliRunner

import gsn
from gsn.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_xenium_store(tmp_path_factory.mktemp("cli") / "xenium.zarr")


class _Result:
    """Exit code and output of one CLI call, the output with rich's box drawing and line wraps removed."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.raw = result.output
        self.output = " ".join(result.output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def _run(*args):
    return _Result(CliRunner().invoke(app, [str(a) for a in args]))


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"gsn {gsn.__version__}"


def test_segment_writes_into_the_store(store):
    result = _run("segment", store)
    assert result.exit_code == 0, result.output
    assert "cells in" in result.output and "genesegnet_table" in result.output
    back = sd.read_zarr(store)
    assert {"genesegnet_labels", "genesegnet_boundaries", "genesegnet_table"} <= {n for _, n, _ in back.gen_elements()}
    table = back["genesegnet_table"]
    assert table.n_obs > 20
    assert table.uns["spatialdata_attrs"]["region"] == "genesegnet_labels"
    labels = np.asarray(back["genesegnet_labels"].values)
    assert set(np.unique(labels[labels > 0])) == set(table.obs["cell_id"])
    # microns of "global": the crop starts at the origin, so spatial = pixel centroid x pixel size
    np.testing.assert_allclose(table.obsm["spatial"], table.obsm["spatial_px"] * XENIUM_PIXEL_SIZE, rtol=1e-6)
    np.testing.assert_allclose(table.obs["area_um2"], table.obs["area"] * XENIUM_PIXEL_SIZE**2)

    again = _run("segment", store)  # the outputs exist now
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert sd.read_zarr(store)["genesegnet_table"].n_obs == table.n_obs  # untouched


def test_clear_errors(store, tmp_path):
    missing = _run("segment", tmp_path / "nope.zarr")
    assert missing.exit_code != 0 and "does not exist" in missing.output
    (tmp_path / "empty.zarr").mkdir()
    not_a_store = _run("segment", tmp_path / "empty.zarr")
    assert not_a_store.exit_code != 0 and "could not be read as a SpatialData zarr store" in not_a_store.output
    no_image = _run("segment", store, "--image", "foo", "--key-added", "x")
    assert no_image.exit_code == 1 and "No image element 'foo'" in no_image.output and "'dapi'" in no_image.output
    no_model = _run("segment", store, "--model", tmp_path / "missing.pt")
    assert no_model.exit_code != 0 and "is not a model file" in no_model.output
    no_labels = _run("train", store, "--labels", "nope", "-o", tmp_path / "m.pt")
    assert no_labels.exit_code == 1 and "No labels element 'nope'" in no_labels.output
    no_seg = _run("compare", store, "--keys", "nope")
    assert no_seg.exit_code == 1 and "No segmentation 'nope'" in no_seg.output
    assert "x_table" not in sd.read_zarr(store)


def test_train_segment_with_the_model_and_compare(store, tmp_path):
    model_file = tmp_path / "model.pt"
    small = ["--epochs", 1, "--steps-per-epoch", 2, "--batch-size", 2, "--crop-size", 64, "--widths", "8,16,32,64"]
    result = _run("train", store, "--labels", "prior_labels", "-o", model_file, *small)
    assert result.exit_code == 0, result.output
    model = gsn.models.load(model_file)
    assert list(model.config.widths) == [8, 16, 32, 64] and len(model.history) == 1
    exists = _run("train", store, "--labels", "prior_labels", "-o", model_file, *small)
    assert exists.exit_code != 0 and "exists" in exists.output

    result = _run("segment", store, "--model", model_file, "--key-added", "own", "--no-grow")
    assert result.exit_code == 0, result.output
    back = sd.read_zarr(store)
    assert back["own_table"].uns["genesegnet"]["model"]["identity"] == model.identity

    result = _run("compare", store, "--keys", "prior,own", "-o", tmp_path / "metrics.csv")
    assert result.exit_code == 0, result.output
    header, *rows = result.raw.strip().splitlines()
    assert header.split()[1:] == ["prior", "own"]
    n_cells = next(r for r in rows if r.startswith("n_cells"))
    import pandas as pd

    tidy = pd.read_csv(tmp_path / "metrics.csv")
    assert set(tidy["key"]) == {"prior", "own"}
    own_cells = tidy[(tidy["key"] == "own") & (tidy["metric"] == "n_cells")]["value"].item()
    assert own_cells == back["own_table"].n_obs
    assert float(n_cells.split()[-1]) == own_cells
