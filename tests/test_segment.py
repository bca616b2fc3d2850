import numpy as np
import pytest
import spatialdata as sd
import torch
from spatialdata.models import Image2DModel, PointsModel
from spatialdata.transformations import Scale, get_transformation

import gsn
import gsn.models
from gsn.models import GeneSegNetModel, ModelConfig, make_targets
from gsn.tl._segment import image_pixel_size, segment
from gsn.tl._train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = [4, 8, 16, 16]


@pytest.fixture(scope="module")
def tiny_model():
    sdata = gsn.datasets.synthetic(shape=(96, 96), seed=11)
    return train(sdata, labels_key="truth_labels", widths=TINY, crop_size=48, batch_size=4, epochs=2,
                 steps_per_epoch=3)  # fmt: skip


@pytest.fixture
def synth():
    return gsn.datasets.synthetic(shape=(100, 120), seed=12)


@pytest.fixture
def oracle(monkeypatch, synth):
    """Replace the network's output by perfect maps made from the true cells."""
    truth = np.asarray(synth.labels["truth_labels"].values)

    def fake_predict_window(runner, inputs, window, core, shape, **kwargs):
        assert shape == truth.shape
        t = make_targets(truth)
        maps = np.concatenate([t.mask[None], t.center[None], t.offsets])
        return maps[(slice(None), *core.slices)]

    monkeypatch.setattr(gsn.models._inference, "predict_window", fake_predict_window)
    return truth


def test_writes_consistent_elements(synth, oracle, tiny_model):
    segment(synth, tiny_model, key_added="gsn", min_area=1, grow=False)
    labels = np.asarray(synth.labels["gsn_labels"].values)
    n = labels.max()
    assert n == len(np.unique(oracle)) - 1
    # same cells as the truth (the oracle's maps decode exactly)
    pairs = np.unique(np.stack([labels.ravel(), oracle.ravel()]), axis=1)
    assert pairs.shape[1] == n + 1
    table = synth.tables["gsn_table"]
    assert table.n_obs == n
    np.testing.assert_array_equal(np.sort(table.obs["cell_id"].to_numpy()), np.arange(1, n + 1))
    shapes = synth.shapes["gsn_boundaries"]
    assert set(shapes.index) == set(range(1, n + 1))
    # the transcripts' column is the label under each molecule
    pts = synth.points["transcripts"].compute()
    ids = labels[np.floor(pts["y"]).astype(int), np.floor(pts["x"]).astype(int)]
    np.testing.assert_array_equal(pts["gsn_cell_id"].to_numpy(), ids)
    # counts agree with the column
    assert table.X.sum() == (ids > 0).sum()
    # results carry the image's transformations
    image_tf = get_transformation(synth.images["dapi"], "global")
    assert get_transformation(synth.labels["gsn_labels"], "global") == image_tf
    uns = table.uns["genesegnet"]
    assert uns["method"] == "genesegnet" and uns["model"]["identity"] == tiny_model.identity
    assert (
        uns["tile"] == 256 and uns["overlap"] == 0.25 and uns["blending"] == "gaussian" and uns["channels"] == ["DAPI"]
    )


def test_refuses_to_overwrite_before_computing(synth, oracle, tiny_model):
    segment(synth, tiny_model, key_added="gsn")
    with pytest.raises(ValueError, match="overwrite"):
        segment(synth, tiny_model, key_added="gsn")
    segment(synth, tiny_model, key_added="gsn", overwrite=True)


def test_real_model_end_to_end_and_zarr(tmp_path, synth, tiny_model):
    segment(synth, tiny_model, tile=64, overlap=0.5, blending="gaussian", batch_size=3)
    labels = np.asarray(synth.labels["genesegnet_labels"].values)
    assert labels.shape == (100, 120)
    assert synth.tables["genesegnet_table"].n_obs == labels.max()
    synth.write(tmp_path / "out.zarr")  # uns and all elements are storable
    back = sd.read_zarr(tmp_path / "out.zarr")
    assert back.tables["genesegnet_table"].uns["genesegnet"]["model"]["identity"] == tiny_model.identity


def test_zero_cells_give_valid_empty_elements(synth, tiny_model):
    empty = tiny_model.copy()
    with torch.no_grad():
        empty.net.head_center.bias.fill_(-30.0)  # no centre anywhere
    segment(synth, empty, key_added="none", missed_nuclei=False)
    assert not np.asarray(synth.labels["none_labels"].values).any()
    assert synth.tables["none_table"].n_obs == 0
    assert (synth.points["transcripts"]["none_cell_id"].compute() == 0).all()


def test_missed_nuclei_become_cells_and_decoded_cells_stay(synth, tiny_model):
    """A network that finds nothing: the stain's nuclei become the cells; next to a decoded cell, none is added."""
    from gsn.blockwise import Window
    from gsn.tl._anchors import anchors_kernel

    empty = tiny_model.copy()
    with torch.no_grad():
        empty.net.head_center.bias.fill_(-30.0)  # no centre anywhere
    segment(synth, empty, key_added="stain", grow=False)
    gsn.pp.watershed(synth)
    labels = np.asarray(synth["stain_labels"].values)
    nuclei = np.asarray(synth["watershed_labels"].values)
    assert synth["stain_table"].n_obs == int(nuclei.max()) > 5
    assert synth["stain_table"].uns["genesegnet"]["n_missed_nuclei"] == int(nuclei.max())
    np.testing.assert_array_equal(labels > 0, nuclei > 0)  # the watershed's nuclei, renumbered

    decoded = np.zeros((30, 40), np.int32)
    decoded[5:15, 5:15] = 7
    stain = np.zeros_like(decoded)
    stain[8:12, 8:12] = 1  # under the decoded cell
    stain[8:12, 16:20] = 2  # one pixel off it: within the 2 px gap
    stain[20:26, 30:36] = 3  # far from it: missed by the network
    whole = Window(0, 30, 0, 40)
    anchors, added = anchors_kernel(decoded, stain, whole, whole, 100)
    assert added.tolist() == [3]
    assert set(np.unique(anchors)) == {0, 7, 103}
    np.testing.assert_array_equal(anchors[decoded > 0], 7)  # decoded cells unchanged


def test_small_image_and_transcripts_in_one_corner(tiny_model):
    sdata = gsn.datasets.synthetic(shape=(40, 50), seed=13)
    segment(sdata, tiny_model)  # smaller than the 256 px tile: padded
    assert np.asarray(sdata.labels["genesegnet_labels"].values).shape == (40, 50)

    big = gsn.datasets.synthetic(shape=(64, 200), seed=14)
    df = big.points["transcripts"].compute()
    df = df[df["x"] < 30]
    big.points["transcripts"] = PointsModel.parse(
        df, coordinates={"x": "x", "y": "y"}, feature_key="gene",
        transformations=get_transformation(big.images["dapi"], get_all=True),
    )  # fmt: skip
    segment(big, tiny_model, tile=32)  # most tiles have no transcript
    assert big.tables["genesegnet_table"].n_obs == np.asarray(big.labels["genesegnet_labels"].values).max()


def test_other_pixel_size_is_resampled_and_mapped_back(tiny_model):
    sdata = gsn.datasets.synthetic(shape=(80, 90), seed=15, pixel_size=0.25)
    assert image_pixel_size(sdata.images["dapi"]) == pytest.approx(0.25)
    segment(sdata, tiny_model)
    table = sdata.tables["genesegnet_table"]
    assert table.uns["genesegnet"]["rescale_factor"] == pytest.approx(0.5, rel=0.02)
    labels = np.asarray(sdata.labels["genesegnet_labels"].values)
    assert labels.shape == (80, 90)
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_segment_without_model_uses_the_default(synth):
    segment(synth)
    table = synth.tables["genesegnet_table"]
    assert table.uns["genesegnet"]["model"]["name"] == "default" and "source" not in table.uns["genesegnet"]["model"]
    labels = np.asarray(synth.labels["genesegnet_labels"].values)
    assert labels.max() == table.n_obs


def test_bad_inputs(synth, tiny_model, tmp_path):
    two = GeneSegNetModel(ModelConfig(channels=["DAPI", "CD45"], widths=TINY))
    with pytest.raises(ValueError, match="reads 2 image channel"):
        segment(synth, two)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="Cannot load GeneSegNet model"):
        segment(synth, bad)
    no_points = sd.SpatialData(images={"dapi": synth.images["dapi"]})
    with pytest.raises(ValueError, match="no points element"):
        segment(no_points, tiny_model)


def test_channel_selection_by_name(tiny_model):
    sdata = gsn.datasets.synthetic(shape=(64, 64), seed=16)
    img = np.asarray(sdata.images["dapi"].values)
    t = {"global": Scale([0.5, 0.5], axes=("y", "x"))}
    sdata.images["dapi"] = Image2DModel.parse(np.concatenate([np.zeros_like(img), img]), dims=("c", "y", "x"),
                                              c_coords=["PolyT", "DAPI"], transformations=t)  # fmt: skip
    segment(sdata, tiny_model)  # picks "DAPI" by name
    assert sdata.tables["genesegnet_table"].uns["genesegnet"]["channels"] == ["DAPI"]
    with pytest.raises(KeyError, match="no channel"):
        segment(sdata, tiny_model, key_added="x", channels=["nope"])
