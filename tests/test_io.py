import json

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel, PointsModel
from spatialdata.transformations import Identity, Scale, get_transformation
from tests.conftest import data_folder

import gsn

IMAGE_FOLDERS = ["xenium_breast_bidcell", "cosmx_lung12_fov002", "cosmx_lung12_fov003", "merscope_mouse_brain"]


@pytest.mark.parametrize("name", IMAGE_FOLDERS + ["iss_ca1_pciseq"])
def test_read_folder(name):
    path = data_folder(name)
    meta = json.loads((path / "meta.json").read_text())
    sdata = gsn.io.read_folder(path)
    points = sdata["transcripts"]
    assert isinstance(points["gene"].dtype, pd.CategoricalDtype)
    assert len(points) == meta["n_transcripts"]
    expected = Scale([meta["pixel_size_um"]] * 2, axes=("y", "x")) if meta.get("pixel_size_um") else Identity()
    assert get_transformation(points) == expected
    if name == "iss_ca1_pciseq":
        assert "dapi" not in sdata and sdata["prior_labels"].shape == tuple(meta["image_shape"])
    else:
        assert sdata["dapi"].shape == (1, *meta["image_shape"])
        assert get_transformation(sdata["dapi"]) == expected
    assert int(sdata["prior_labels"].max()) == meta["n_prior_objects"]


@pytest.mark.parametrize("name", IMAGE_FOLDERS)
def test_baseline_pipeline_on_real_data(name):
    sdata = gsn.io.read_folder(data_folder(name))
    gsn.pp.rna_location_map(sdata)
    gsn.pp.watershed(sdata)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    table = sdata["watershed_table"]
    assert table.n_obs > 10
    labels = sdata["watershed_labels"].values
    assert set(table.obs["cell_id"]) == set(np.unique(labels[labels > 0]))
    assert list(sdata["watershed_boundaries"].index) == list(table.obs["cell_id"])
    assigned = sdata["transcripts"]["watershed_cell_id"].compute()
    assert table.X.sum() == (assigned > 0).sum() > 0


def test_iss_prior_without_image():
    sdata = gsn.io.read_folder(data_folder("iss_ca1_pciseq"))
    gsn.tl.cells_from_labels(sdata, "prior_labels")
    assert sdata["prior_table"].n_obs == 3481


def xenium_like(scale_factors=(2, 2)):
    """The layout spatialdata-io's Xenium reader produces: multiscale image, transcripts in microns."""
    folder = gsn.io.read_folder(data_folder("xenium_breast_bidcell"))
    px = folder.attrs["gsn_meta"]["pixel_size_um"]
    image = Image2DModel.parse(
        folder["dapi"].data, dims=("c", "y", "x"), c_coords=["DAPI"], scale_factors=list(scale_factors),
        transformations={"global": Scale([px, px], axes=("y", "x"))}, chunks=(1, 512, 512),
    )  # fmt: skip
    df = folder["transcripts"].compute()
    df[["x", "y"]] = df[["x", "y"]] * px
    points = PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene",
                               transformations={"global": Identity()})  # fmt: skip
    return folder, sd.SpatialData(images={"morphology_focus": image}, points={"transcripts": points})


def test_spatialdata_io_layout_gives_same_results_as_pixel_layout():
    folder, xen = xenium_like()
    ref = gsn.pp.rna_location_map(folder, inplace=False).values
    got = gsn.pp.rna_location_map(xen, inplace=False).values
    # float32 micron round trip moves a few transcripts across a pixel edge
    assert np.abs(got - ref).mean() < 1e-3
    labels = folder["prior_labels"]
    xen["prior_labels"] = labels
    ids_px = gsn.tl.assign_transcripts(folder, "prior_labels", inplace=False)
    ids_um = gsn.tl.assign_transcripts(xen, "prior_labels", inplace=False)
    assert np.mean(ids_px == ids_um) > 0.999
    gsn.pp.watershed(xen)
    assert get_transformation(xen["watershed_labels"]) == get_transformation(folder["dapi"])


def test_zarr_round_trip(tmp_path, sdata):
    gsn.pp.watershed(sdata, min_distance=3)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    path = tmp_path / "x.zarr"
    sdata.write(path)
    back = sd.read_zarr(path)
    assert set(back.tables) == {"watershed_table"} and "watershed_boundaries" in back
    tab0, tab1 = sdata["watershed_table"], back["watershed_table"]
    assert list(tab1.obs["cell_id"]) == list(tab0.obs["cell_id"]) == list(back["watershed_boundaries"].index)
    assert tab1.uns["spatialdata_attrs"] == tab0.uns["spatialdata_attrs"]
    assert (tab1.X != tab0.X).nnz == 0 and list(tab1.var_names) == list(tab0.var_names)
    np.testing.assert_array_equal(back["watershed_labels"].values, sdata["watershed_labels"].values)
    for name in ("dapi", "watershed_labels", "watershed_boundaries", "transcripts"):
        t0, t1 = get_transformation(sdata[name], get_all=True), get_transformation(back[name], get_all=True)
        assert set(t0) == set(t1) == {"global"}
        axes = ("x", "y")
        np.testing.assert_allclose(t1["global"].to_affine_matrix(axes, axes), t0["global"].to_affine_matrix(axes, axes))
    pts = back["transcripts"].compute()
    np.testing.assert_array_equal(pts["watershed_cell_id"], sdata["transcripts"]["watershed_cell_id"].compute())
    genes = back["transcripts"]["gene"].cat.as_known().compute()
    assert set(genes.cat.categories) == {"A", "B", "C", "D"}
    # gsn reads the round-tripped object (categories unknown after read_zarr) the same way
    table = gsn.tl.aggregate(back, "watershed_labels", inplace=False)
    assert (table.X != tab0.X).nnz == 0


def test_backed_object_gets_new_elements_written_without_touching_others(tmp_path, sdata):
    path = tmp_path / "b.zarr"
    sdata.write(path)
    backed = sd.read_zarr(path)
    before = {p: (path / p).stat().st_mtime_ns for p in ("images/dapi", "points/transcripts")}
    gsn.pp.watershed(backed, min_distance=3)
    gsn.tl.cells_from_labels(backed, "watershed_labels")
    on_disk = set(backed.elements_paths_on_disk())
    assert {"labels/watershed_labels", "shapes/watershed_boundaries", "tables/watershed_table"} <= on_disk
    assert before == {p: (path / p).stat().st_mtime_ns for p in before}
    again = sd.read_zarr(path)
    assert again["watershed_table"].n_obs == 3
    # overwrite=True replaces the element in the store too
    gsn.pp.watershed(backed, min_distance=3, erosion_radius=0, overwrite=True)
    assert "labels/watershed_labels" in set(backed.elements_paths_on_disk())
