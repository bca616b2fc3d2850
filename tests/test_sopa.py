"""gsn in a sopa pipeline (docs/sopa.md): sopa's attrs in and out, sopa.aggregate, Xenium Explorer export.

The end-to-end test is the issue's "done when": a zarr written from the Xenium crop, `gsn segment` run
as a user runs it (the installed command, in its own process), then `sopa.aggregate`, scanpy clusters,
`sopa.io.explorer.write`, and a spatialdata-plot render coloured by cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import spatialdata as sd
from shapely.geometry import Polygon
from tests.stores import XENIUM_PIXEL_SIZE, write_xenium_store

import gsn

sopa = pytest.importorskip("sopa")


def _gsn_command() -> list[str]:
    script = Path(sys.executable).with_name("gsn")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gsn.cli"]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A Xenium store segmented by the `gsn segment` command."""
    path = write_xenium_store(tmp_path_factory.mktemp("sopa") / "xenium.zarr", side_px=600)
    run = subprocess.run([*_gsn_command(), "segment", str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return path


def test_segment_records_its_result_in_sopa_attrs(segmented):
    sdata = sd.read_zarr(segmented)  # the attrs come from the store, not from memory
    assert sdata.attrs[gsn.SopaAttrs.BOUNDARIES] == "genesegnet_boundaries"
    assert sdata.attrs[gsn.SopaAttrs.IMAGE] == "dapi"
    assert sdata.attrs[gsn.SopaAttrs.POINTS] == "transcripts"
    boundaries, table = sdata["genesegnet_boundaries"], sdata["genesegnet_table"]
    # the id is a column too, equal to the index as gsn writes it, and to the table's cell_id
    np.testing.assert_array_equal(boundaries["cell_id"].to_numpy(), boundaries.index.to_numpy())
    np.testing.assert_array_equal(np.sort(boundaries["cell_id"].to_numpy()), np.sort(table.obs["cell_id"].to_numpy()))


def test_sopa_aggregate_explorer_and_plot_by_cluster(segmented, tmp_path):
    import scanpy as sc
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)
    import zarr

    path = tmp_path / "copy.zarr"
    shutil.copytree(segmented, path)
    sdata = sd.read_zarr(path)
    ours = sdata["genesegnet_table"]
    # no shapes_key, image_key or points_key: sopa finds gsn's result through the attrs gsn set
    sopa.aggregate(sdata, aggregate_channels=False, min_transcripts=0)
    table, boundaries = sdata["table"], sdata["genesegnet_boundaries"]
    assert table.uns["spatialdata_attrs"]["region"] == "genesegnet_boundaries"
    assert table.n_obs == ours.n_obs
    assert set(boundaries.index) == set(table.obs_names)  # sopa re-indexed the polygons ...
    assert not set(boundaries.index) & set(ours.obs_names)

    # ... and the cell_id column still joins them to the labels and to gsn's table
    ids = boundaries.loc[table.obs_names, "cell_id"].to_numpy()
    matched = ours[ours.obs.reset_index().set_index("cell_id").loc[ids, "index"].to_numpy()]
    np.testing.assert_array_equal(matched.obs["cell_id"].to_numpy(), ids)
    genes = ours.var_names
    sopa_counts = np.asarray(table[:, genes].X.sum(axis=1)).ravel()
    gsn_counts = np.asarray(matched.X.sum(axis=1)).ravel()
    # sopa counts points inside the polygons, gsn by pixel: the polygons follow the pixel edges, so the
    # counts agree (only a molecule exactly on a pixel edge could differ)
    np.testing.assert_array_equal(sopa_counts, gsn_counts)

    # clusters by expression, on sopa's table
    adata = table.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=10)
    sc.pp.neighbors(adata, n_neighbors=10)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False, resolution=1.0, random_state=0)
    table.obs["leiden"] = adata.obs["leiden"]
    assert table.obs["leiden"].nunique() >= 2

    # Xenium Explorer: one cell per table row, polygons where gsn's cells are (µm from the image origin)
    out = tmp_path / "explorer"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sopa.io.explorer.write(out, sdata, shapes_key="genesegnet_boundaries", gene_column="gene")
    experiment = json.loads((out / "experiment.xenium").read_text())
    assert experiment["num_cells"] == table.n_obs
    assert experiment["pixel_size"] == pytest.approx(XENIUM_PIXEL_SIZE)
    cells = zarr.open_group(zarr.storage.ZipStore(out / "cells.zarr.zip", mode="r"), mode="r")
    vertices = np.asarray(cells["polygon_vertices"])[-1].reshape(table.n_obs, -1, 2)  # the "cell" polygon set
    n_vertices = np.asarray(cells["polygon_num_vertices"])[-1]
    centres = np.array([Polygon(v[:n]).centroid.coords[0] for v, n in zip(vertices, n_vertices, strict=True)])
    expected = matched.obsm["spatial_px"] * XENIUM_PIXEL_SIZE
    assert np.median(np.linalg.norm(centres - expected, axis=1)) < 1.0  # µm
    assert (out / "analysis.zarr.zip").is_file() and (out / "transcripts.zarr.zip").is_file()

    # spatialdata-plot: the cells coloured by cluster, one colour per cluster
    fig, ax = plt.subplots()
    sdata.pl.render_shapes("genesegnet_boundaries", color="leiden", table_name="table").pl.show(
        ax=ax, coordinate_systems="global"
    )
    fig.canvas.draw()
    colours = [tuple(np.round(c, 3)) for c in ax.collections[0].get_facecolor()]
    by_cluster = {}
    for colour, cluster in zip(colours, table.obs["leiden"], strict=True):
        by_cluster.setdefault(cluster, set()).add(colour)
    assert all(len(v) == 1 for v in by_cluster.values())  # one colour per cluster
    assert len({next(iter(v)) for v in by_cluster.values()}) == len(by_cluster)  # distinct clusters, distinct colours
    plt.close(fig)


def test_inputs_from_sopa_attrs(tmp_path):
    """An object sopa made (several images and points, roles in attrs): gsn needs no keys."""
    path = write_xenium_store(tmp_path / "sopa_like.zarr", side_px=256)
    sdata = sd.read_zarr(path)
    sdata["he"] = sd.models.Image2DModel.parse(np.zeros((3, 64, 64), np.uint8), dims=("c", "y", "x"))
    sdata["other_points"] = sd.models.PointsModel.parse(
        __import__("pandas").DataFrame({"x": [1.0], "y": [1.0], "gene": ["A"]}), feature_key="gene"
    )
    with pytest.raises(ValueError, match="several (image|points) elements"):
        gsn.tl.segment(sdata)
    sdata.attrs.update({gsn.SopaAttrs.IMAGE: "dapi", gsn.SopaAttrs.POINTS: "transcripts"})
    gsn.tl.segment(sdata)
    table = sdata["genesegnet_table"]
    assert table.uns["genesegnet"]["image"] == "dapi" and table.uns["genesegnet"]["points"] == "transcripts"
    assert table.obs["n_transcripts"].sum() > 0
    assert sdata.attrs[gsn.SopaAttrs.BOUNDARIES] == "genesegnet_boundaries"
