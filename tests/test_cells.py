import logging

import numpy as np
import pytest
import spatialdata as sd
from spatialdata.models import PointsModel
from spatialdata.transformations import Identity, Scale, get_transformation
from tests.conftest import tiny_arrays

import gsn


def expected_ids(labels, df):
    return labels[np.floor(df.y).astype(int), np.floor(df.x).astype(int)]


def test_assign_transcripts_lookup(sdata):
    _, labels, _, df = tiny_arrays()
    gsn.tl.assign_transcripts(sdata, "truth_labels")
    got = sdata["transcripts"]["truth_cell_id"].compute().to_numpy()
    np.testing.assert_array_equal(got, expected_ids(labels, df))
    # the vendor column is untouched
    assert (sdata["transcripts"]["cell_id"].compute() == -1).all()
    # attrs (transformations) survive the new column
    assert get_transformation(sdata["transcripts"]) == Scale([0.5, 0.5], axes=("y", "x"))


def test_assign_refuses_existing_column_and_vendor_column(sdata):
    gsn.tl.assign_transcripts(sdata, "truth_labels")
    with pytest.raises(ValueError, match="already have a column 'truth_cell_id'"):
        gsn.tl.assign_transcripts(sdata, "truth_labels")
    with pytest.raises(ValueError, match="'cell_id'"):
        gsn.tl.assign_transcripts(sdata, "truth_labels", key_added="cell_id")
    gsn.tl.assign_transcripts(sdata, "truth_labels", overwrite=True)


def _replace_points(sdata, df, transformations):
    del sdata.points["transcripts"]
    sdata["transcripts"] = PointsModel.parse(
        df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations=transformations
    )


def test_nan_coordinates_error_and_object_unchanged(sdata):
    _, _, _, df = tiny_arrays()
    df.loc[[3, 7], "x"] = np.nan
    _replace_points(sdata, df, {"global": Scale([0.5, 0.5], axes=("y", "x"))})
    before = list(sdata.tables)
    with pytest.raises(ValueError, match="2 of 300 transcripts .* NaN"):
        gsn.tl.cells_from_labels(sdata, "truth_labels")
    assert list(sdata.tables) == before and "truth_boundaries" not in sdata
    assert "truth_cell_id" not in sdata["transcripts"].columns


def test_transcripts_outside_image_counted(sdata, caplog):
    _, _, _, df = tiny_arrays()
    df.loc[:9, "x"] = 500.0
    _replace_points(sdata, df, {"global": Scale([0.5, 0.5], axes=("y", "x"))})
    with caplog.at_level(logging.WARNING, logger="gsn"):
        ids = gsn.tl.assign_transcripts(sdata, "truth_labels", inplace=False)
    assert "10 of 300 transcripts" in caplog.text
    assert (ids[:10] == 0).all()


def test_all_outside_and_mismatched_coordinate_systems(sdata):
    _, _, _, df = tiny_arrays()
    df["x"] += 1000
    _replace_points(sdata, df, {"global": Scale([0.5, 0.5], axes=("y", "x"))})
    with pytest.raises(ValueError, match="All 300 transcripts .* fall outside"):
        gsn.tl.assign_transcripts(sdata, "truth_labels")
    _replace_points(sdata, tiny_arrays()[3], {"other": Identity()})
    with pytest.raises(ValueError, match="share no coordinate system"):
        gsn.tl.assign_transcripts(sdata, "truth_labels")


def test_transcripts_in_microns_are_mapped_through_transformations(sdata):
    """spatialdata-io layout: transcripts in microns (identity to global), image in pixels with a scale."""
    _, labels, _, df = tiny_arrays()
    microns = df.copy()
    microns[["x", "y"]] *= 0.5
    _replace_points(sdata, microns, {"global": Identity()})
    ids = gsn.tl.assign_transcripts(sdata, "truth_labels", inplace=False)
    np.testing.assert_array_equal(ids, expected_ids(labels, df))


def test_cells_from_labels_keys_and_ids(sdata):
    _, labels, _, df = tiny_arrays()
    gsn.tl.cells_from_labels(sdata, "truth_labels", key_added="seg")
    table = sdata["seg_table"]
    shapes = sdata["seg_boundaries"]
    assert sdata["seg_labels"] is sdata["truth_labels"]
    assert list(table.obs["cell_id"]) == [1, 2, 3] == list(shapes.index)
    assert list(table.obs_names) == ["1", "2", "3"]
    assert table.uns["spatialdata_attrs"] == {"region": "seg_labels", "region_key": "region", "instance_key": "cell_id"}
    assert list(table.obs["area"]) == [400, 400, 625]
    np.testing.assert_allclose(table.obs["area_um2"], [100.0, 100.0, 156.25])  # 0.5 µm pixels
    np.testing.assert_allclose(table.obsm["spatial_px"][0], [15.0, 15.0])  # pixel centres at i + 0.5
    np.testing.assert_allclose(table.obsm["spatial"][0], [7.5, 7.5])  # microns of "global"
    # counts by hand
    ids = expected_ids(labels, df)
    for cell in (1, 2, 3):
        for j, gene in enumerate(table.var_names):
            assert table.X[cell - 1, j] == np.sum((ids == cell) & (df.gene.astype(str) == gene))
    assert table.obs["n_transcripts"].sum() == np.sum(ids > 0)
    # polygons follow pixel edges exactly: cell 1 covers x, y in [5, 25)
    assert shapes.geometry[1].area == 400
    assert shapes.geometry[1].bounds == (5, 5, 25, 25)
    np.testing.assert_array_equal(sdata["transcripts"]["seg_cell_id"].compute(), ids)
    assert table.uns["genesegnet"]["labels"] == "truth_labels"


def test_cells_from_labels_default_prefix_and_existing_keys(sdata):
    gsn.tl.cells_from_labels(sdata, "truth_labels")
    assert {"truth_boundaries", "truth_table"} <= set(sdata.shapes) | set(sdata.tables)
    with pytest.raises(ValueError, match="already exist"):
        gsn.tl.cells_from_labels(sdata, "truth_labels")
    gsn.tl.cells_from_labels(sdata, "truth_labels", overwrite=True)


def test_cells_from_labels_noncontiguous_ids_and_split_cells(sdata):
    _, labels, _, _ = tiny_arrays()
    labels = labels * 7  # ids 7, 14, 21
    labels[50:55, 5:10] = 14  # a second piece of cell 14
    from spatialdata.models import Labels2DModel

    sdata["odd_labels"] = Labels2DModel.parse(
        labels, dims=("y", "x"), transformations=get_transformation(sdata["dapi"], get_all=True)
    )
    gsn.tl.cells_from_labels(sdata, "odd_labels")
    assert list(sdata["odd_table"].obs["cell_id"]) == [7, 14, 21]
    assert sdata["odd_boundaries"].geometry[14].geom_type == "MultiPolygon"


def test_empty_labels_give_valid_empty_table(sdata):
    from spatialdata.models import Labels2DModel

    transformations = get_transformation(sdata["dapi"], get_all=True)
    sdata["empty_labels"] = Labels2DModel.parse(
        np.zeros((64, 80), np.int32), dims=("y", "x"), transformations=transformations
    )
    gsn.tl.cells_from_labels(sdata, "empty_labels")
    assert sdata["empty_table"].n_obs == 0
    assert (sdata["transcripts"]["empty_cell_id"].compute() == 0).all()


def test_aggregate_table_only(sdata):
    table = gsn.tl.aggregate(sdata, "truth_labels", inplace=False)
    assert table.shape == (3, 4) and "truth_boundaries" not in sdata
    gsn.tl.aggregate(sdata, "truth_labels")
    assert "truth_table" in sdata


def test_write_segmentation_checks_shape(sdata):
    with pytest.raises(ValueError, match="do not match image 'dapi'"):
        gsn.tl.write_segmentation(sdata, np.zeros((10, 10), np.int32), key_added="x")


def test_points_without_gene_column():
    image, labels, _, df = tiny_arrays()
    from spatialdata.models import Labels2DModel

    pts = PointsModel.parse(df[["x", "y"]].copy(), coordinates={"x": "x", "y": "y"})
    s = sd.SpatialData(labels={"a_labels": Labels2DModel.parse(labels, dims=("y", "x"))}, points={"p": pts})
    with pytest.raises(ValueError, match="no gene column"):
        gsn.tl.cells_from_labels(s, "a_labels")


def test_element_lookup_errors(sdata):
    with pytest.raises(KeyError, match="No labels element 'nope'.*'nuclei_labels', 'truth_labels'"):
        gsn.tl.cells_from_labels(sdata, "nope")
    with pytest.raises(ValueError, match="several labels elements"):
        gsn.tl.cells_from_labels(sdata, None)
    empty = sd.SpatialData()
    with pytest.raises(ValueError, match="has no image element"):
        gsn.pp.watershed(empty)


def test_multichannel_image_needs_channel(sdata):
    from spatialdata.models import Image2DModel

    img = np.stack([sdata["dapi"].values[0]] * 2)
    del sdata.images["dapi"]
    sdata["stains"] = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["DAPI", "CD45"])
    with pytest.raises(ValueError, match="2 channels.*pass `channel=`"):
        gsn.pp.watershed(sdata)
    with pytest.raises(KeyError, match="no channel 'X'"):
        gsn.pp.watershed(sdata, channel="X")
    gsn.pp.watershed(sdata, channel="DAPI", min_distance=3)
    assert int(sdata["watershed_labels"].max()) == 3


def test_blank_image_gives_no_cells(sdata, caplog):
    from spatialdata.models import Image2DModel

    del sdata.images["dapi"]
    sdata["dapi"] = Image2DModel.parse(np.zeros((1, 64, 80), np.uint16), dims=("c", "y", "x"), c_coords=["DAPI"])
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.pp.watershed(sdata)
    assert int(sdata["watershed_labels"].max()) == 0
    assert "blank" in caplog.text


def test_table_coordinates_follow_the_global_coordinate_system(sdata):
    """obsm["spatial"] is in the units of "global" (translation and scale applied), pixels for an identity."""
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import Identity, Sequence, Translation

    _, labels, _, _ = tiny_arrays()
    shifted = Sequence([Scale([0.5, 0.5], axes=("y", "x")), Translation([2.0, 1.0], axes=("x", "y"))])
    sdata["shifted_labels"] = Labels2DModel.parse(labels, dims=("y", "x"), transformations={"global": shifted})
    sdata["plain_labels"] = Labels2DModel.parse(labels, dims=("y", "x"), transformations={"global": Identity()})
    gsn.tl.cells_from_labels(sdata, "shifted_labels", points_key="transcripts")
    gsn.tl.cells_from_labels(sdata, "plain_labels", points_key="transcripts")
    shifted_table, plain = sdata["shifted_table"], sdata["plain_table"]
    np.testing.assert_allclose(shifted_table.obsm["spatial_px"], plain.obsm["spatial_px"])
    np.testing.assert_allclose(shifted_table.obsm["spatial"], plain.obsm["spatial_px"] * 0.5 + [2.0, 1.0])
    np.testing.assert_allclose(shifted_table.obs["area_um2"], shifted_table.obs["area"] * 0.25)
    np.testing.assert_allclose(plain.obsm["spatial"], plain.obsm["spatial_px"])
    assert "area_um2" not in plain.obs  # identity: pixel size unknown
