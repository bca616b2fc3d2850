"""Bad or unusual inputs: each gives a clear error naming what is wrong, or the correct result.

One test per case of the reliability review (issue 10); each asserts the message or the result.
"""

import json
import logging
import re

import numpy as np
import pytest
import spatialdata as sd
import tifffile
import torch
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel
from spatialdata.transformations import Identity, Scale, get_transformation
from tests.conftest import PIXEL_SIZE, tiny_arrays, tiny_sdata

import gsn
import gsn.models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCALE = {"global": Scale([PIXEL_SIZE, PIXEL_SIZE], axes=("y", "x"))}


def _replace_image(sdata, image, key="dapi"):
    t = dict(SCALE) if key == "dapi" else None
    del sdata.images[key]
    sdata[key] = Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=t)


def _replace_points(sdata, df, transformations=None):
    del sdata.points["transcripts"]
    sdata["transcripts"] = PointsModel.parse(
        df, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations=transformations or dict(SCALE)
    )


def _add_labels(sdata, key, values):
    sdata[key] = Labels2DModel.parse(values, dims=("y", "x"), transformations=dict(SCALE))


# ------------------------------------------------------------------------------------ segment arguments
@pytest.mark.parametrize("pixel_size", [0, -0.5, float("nan"), float("inf")])
def test_segment_refuses_nonpositive_pixel_size(sdata, pixel_size):
    with pytest.raises(ValueError, match="`pixel_size` must be a positive number of microns per pixel"):
        gsn.tl.segment(sdata, pixel_size=pixel_size)
    assert "genesegnet_labels" not in sdata


@pytest.mark.parametrize("pixel_size", [100.0, 0.001])
def test_segment_refuses_absurd_resampling_before_allocating(sdata, pixel_size):
    # The default model works at 0.4 um/px: 100 um pixels would mean a 250x upsample (16000 x 20000 px).
    with pytest.raises(ValueError, match=r"resampling by [0-9.e+-]+x \(64 x 80 px -> \d+ x \d+ px\), beyond the 8x"):
        gsn.tl.segment(sdata, pixel_size=pixel_size)


def test_segment_cuda_without_cuda(sdata, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"CUDA is not available .*available devices: \['cpu'"):
        gsn.tl.segment(sdata, device="cuda")
    with pytest.raises(ValueError, match="is not a torch device"):
        gsn.models.resolve_device("gpu0")


# ------------------------------------------------------------------------------------ NaN pixels and genes
def _synthetic_float(nan_at=None):
    synth = gsn.datasets.synthetic(shape=(100, 120), seed=12)
    (key,) = [k for k in synth.images if not k.endswith("_normalized")]
    el = synth.images[key]
    image = np.asarray(el.values, dtype=np.float32)
    if nan_at is not None:
        image[(0, *nan_at)] = np.nan
    del synth.images[key]
    synth[key] = Image2DModel.parse(image, dims=("c", "y", "x"), c_coords=list(el.coords["c"].values),
                                    transformations=get_transformation(el, get_all=True))  # fmt: skip
    return synth, key


def test_segment_treats_nan_pixels_as_missing(caplog):
    clean, key = _synthetic_float()
    gsn.tl.segment(clean, key_added="clean", grow=False)
    n_clean = int(clean["clean_table"].n_obs)
    assert n_clean > 5
    dirty, key = _synthetic_float(nan_at=(50, 60))
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.tl.segment(dirty, key_added="dirty", grow=False)
    assert f"Image {key!r} has 1 NaN or infinite pixel(s)" in caplog.text and "treated as missing" in caplog.text
    # one missing pixel changes at most the cell it falls in
    assert abs(int(dirty["dirty_table"].n_obs) - n_clean) <= 1


def test_watershed_treats_nan_pixels_as_missing(caplog):
    ref = tiny_sdata()
    image = np.asarray(ref.images["dapi"].values[0], dtype=np.float32)
    _replace_image(ref, image)
    gsn.pp.watershed(ref)
    expected = np.asarray(ref["watershed_labels"].values)
    assert expected.max() == 3
    dirty = tiny_sdata()
    image = image.copy()
    image[0, 0] = np.nan
    image[30, 30] = np.nan
    _replace_image(dirty, image)
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.pp.watershed(dirty)
    assert "has 2 NaN or infinite pixel(s)" in caplog.text
    assert int(np.asarray(dirty["watershed_labels"].values).max()) == 3


def test_nan_genes_are_refused(sdata):
    _, _, _, df = tiny_arrays()
    df.loc[[4, 9, 11], "gene"] = np.nan  # stays categorical: codes -1
    _replace_points(sdata, df)
    with pytest.raises(
        ValueError, match=r"3 of 300 transcripts in 'transcripts' have no gene \(NaN in column 'gene'\)"
    ):
        gsn.tl.cells_from_labels(sdata, "truth_labels")
    with pytest.raises(ValueError, match="have no gene"):
        gsn.pp.rna_location_map(sdata)
    assert "truth_table" not in sdata and "truth_cell_id" not in sdata["transcripts"].columns


# ------------------------------------------------------------------------------------ frames
@pytest.mark.parametrize("case", ["microns_identity_on_both", "scale_on_points_only"])
def test_points_and_image_frames_mismatch_warns_with_both_extents(case, caplog):
    sdata = tiny_sdata()
    image, _, _, df = tiny_arrays()
    if case == "microns_identity_on_both":
        df[["x", "y"]] *= PIXEL_SIZE  # microns, but no transformation says so
        _replace_points(sdata, df, {"global": Identity()})
    del sdata.images["dapi"]  # the image keeps no Scale: its pixels count as units of "global"
    sdata["dapi"] = Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"])
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.pp.rna_location_map(sdata)
    msg = [r.getMessage() for r in caplog.records if "span only" in r.getMessage()]
    assert msg, caplog.text
    pattern = r"span only x 0\.\d\.\.(39\.\d|40\.0), y 0\.\d\.\.3\d\.\d of image 'dapi', "
    pattern += r"which is x 0\.\.80, y 0\.\.64 px"
    assert re.search(pattern, msg[0]), msg[0]
    assert "different units" in msg[0]


# ------------------------------------------------------------------------------------ labels at the boundary
@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        (
            lambda lab: (-lab).astype(np.int32),
            ValueError,
            r"Labels 'bad_labels': labels have negative values \(min -3\)",
        ),
        (
            lambda lab: lab.astype(np.float32) + 0.5,
            TypeError,
            r"Labels 'bad_labels': labels must be integers .*float32",
        ),
        (lambda lab: lab > 0, TypeError, r"Labels 'bad_labels': labels are a boolean mask"),
        (lambda lab: (lab * 700_000_000).astype(np.int32), ValueError, r"the largest cell id is 2100000000"),
    ],
    ids=["negative", "float", "bool", "huge"],
)
@pytest.mark.parametrize("call", ["cells_from_labels", "assign_transcripts", "aggregate"])
def test_labels_validated_at_the_boundary(sdata, values, error, message, call):
    _, labels, _, _ = tiny_arrays()
    _add_labels(sdata, "bad_labels", values(labels))
    with pytest.raises(error, match=message):
        getattr(gsn.tl, call)(sdata, "bad_labels")
    assert "bad_table" not in sdata and "bad_cell_id" not in sdata["transcripts"].columns


def test_train_labels_use_the_same_check(sdata):
    _, labels, _, _ = tiny_arrays()
    _add_labels(sdata, "bad_labels", (-labels).astype(np.int32))
    with pytest.raises(ValueError, match="labels have negative values"):
        gsn.tl.train(sdata, labels_key="bad_labels", widths=[4, 8], epochs=1, steps_per_epoch=1, crop_size=32)


# ------------------------------------------------------------------------------------ overwrite never hits inputs
@pytest.mark.parametrize("column", ["x", "y", "gene"])
def test_assign_overwrite_never_replaces_coordinates_or_genes(sdata, column):
    before = sdata["transcripts"][column].compute().to_numpy()
    with pytest.raises(ValueError, match=f"Column '{column}' of points 'transcripts' .* never replaced"):
        gsn.tl.assign_transcripts(sdata, "truth_labels", key_added=column, overwrite=True)
    np.testing.assert_array_equal(sdata["transcripts"][column].compute().to_numpy(), before)


def test_rna_map_overwrite_never_replaces_the_points(sdata):
    with pytest.raises(ValueError, match=r"\['transcripts'\] are inputs of this call"):
        gsn.pp.rna_location_map(sdata, key_added="transcripts", overwrite=True)
    with pytest.raises(ValueError, match=r"\['dapi'\] are inputs of this call"):
        gsn.pp.rna_location_map(sdata, key_added="dapi", overwrite=True)
    assert "transcripts" in sdata.points and "dapi" in sdata.images


def test_cells_from_labels_overwrite_never_replaces_the_points(sdata):
    with pytest.raises(ValueError, match=r"\['transcripts'\] are inputs of this call"):
        gsn.tl.aggregate(sdata, "truth_labels", key_added="transcripts", overwrite=True)
    assert "transcripts" in sdata.points


# ------------------------------------------------------------------------------------ rna_location_map arguments
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "mean"}, ValueError, r"`mode` must be 'sum' .* or 'max' .*, got 'mean'"),
        ({"scale": -1}, ValueError, r"`scale` must be a positive finite number .*, got -1"),
        ({"scale": 0}, ValueError, r"`scale` must be a positive finite number .*, got 0"),
        ({"scale": "max"}, ValueError, r"`scale` must be a positive number or 'auto', got 'max'"),
        ({"sigma": float("nan")}, ValueError, r"`sigma` must be a positive finite number of pixels, got nan"),
        ({"sigma": "7"}, TypeError, r"`sigma` must be a number of pixels, got '7'"),
        ({"chunks": 0}, ValueError, r"`chunks` must be a positive integer"),
        ({"genes": "A"}, TypeError, r"`genes` must be a list of gene names, got 'A'; for one gene pass \['A'\]"),
    ],
)
def test_rna_map_arguments(sdata, kwargs, error, message):
    with pytest.raises(error, match=message):
        gsn.pp.rna_location_map(sdata, **kwargs)
    assert "rna_map" not in sdata.images


def test_rna_map_array_arguments():
    with pytest.raises(ValueError, match="`mode`"):
        gsn.pp.rna_location_map_array(np.zeros(1), np.zeros(1), (4, 4), mode="mean")


# ------------------------------------------------------------------------------------ models and checkpoints
@pytest.fixture
def model_file(tmp_path):
    model = gsn.models.GeneSegNetModel(gsn.models.ModelConfig(widths=[4, 8], pixel_size=0.5))
    path = tmp_path / "m.pt"
    model.save(path)
    return path


def _edit_model(path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sigma", float("nan"), r"field 'config.sigma' must be a positive finite number, got nan"),
        ("pixel_size", -0.5, r"field 'config.pixel_size' must be a positive finite number, got -0.5"),
        ("offset_scale", 0.0, r"field 'config.offset_scale' must be a positive finite number"),
        ("rna_mode", "mean", r"field 'config.rna_mode' must be 'sum' or 'max'"),
        ("norm_high", 150.0, r"'config.norm_high' must be percentiles"),
    ],
)
def test_load_validates_config(model_file, field, value, message):
    _edit_model(model_file, lambda p: p["config"].__setitem__(field, value))
    with pytest.raises(ValueError, match=message):
        gsn.models.load(model_file)


def test_load_refuses_nan_weights(model_file):
    def poison(payload):
        name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        payload["state_dict"][name].view(-1)[0] = float("nan")

    _edit_model(model_file, poison)
    with pytest.raises(ValueError, match=r"field 'state_dict' has NaN or infinite values in 1 tensor"):
        gsn.models.load(model_file)


def test_train_refuses_unrelated_checkpoint_file(sdata, tmp_path):
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("my notes")
    with pytest.raises(
        ValueError,
        match=r"exists and is not a gsn training checkpoint \(not a readable torch file.*\); it would be overwritten",
    ):
        gsn.tl.train(sdata, labels_key="truth_labels", widths=[4, 8], epochs=1, steps_per_epoch=1, crop_size=32,
                     checkpoint=unrelated)  # fmt: skip
    assert unrelated.read_text() == "my notes"
    other_model = tmp_path / "model.pt"
    gsn.models.GeneSegNetModel(gsn.models.ModelConfig(widths=[4, 8])).save(other_model)
    before = other_model.read_bytes()
    with pytest.raises(ValueError, match="is not a gsn training checkpoint"):
        gsn.tl.train(sdata, labels_key="truth_labels", widths=[4, 8], epochs=1, steps_per_epoch=1, crop_size=32,
                     checkpoint=other_model, max_rounds=2)  # fmt: skip
    assert other_model.read_bytes() == before


# ------------------------------------------------------------------------------------ read_folder
@pytest.fixture
def folder(tmp_path):
    image, labels, _, df = tiny_arrays()
    tifffile.imwrite(tmp_path / "dapi.tif", image)
    tifffile.imwrite(tmp_path / "prior_labels.tif", labels)
    df.drop(columns="cell_id").to_parquet(tmp_path / "transcripts.parquet")
    (tmp_path / "meta.json").write_text(json.dumps({"pixel_size_um": 0.5}))
    assert isinstance(gsn.io.read_folder(tmp_path), sd.SpatialData)
    return tmp_path


def test_read_folder_truncated_tif(folder):
    data = (folder / "dapi.tif").read_bytes()
    (folder / "dapi.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"dapi.tif: cannot be read as a TIFF image"):
        gsn.io.read_folder(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{pixel_size_um: 0.5", r"meta.json: not valid JSON"),
        ("[0.5]", r"meta.json: must hold a JSON object .* got a list"),
        ('{"pixel_size_um": -1}', r"meta.json: 'pixel_size_um' must be a positive number of microns, got -1"),
    ],
)
def test_read_folder_bad_meta(folder, text, message):
    (folder / "meta.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        gsn.io.read_folder(folder)


@pytest.mark.parametrize(
    ("prior", "error", "message"),
    [
        (
            np.zeros((10, 10), np.int32),
            ValueError,
            r"prior_labels.tif has shape \(10, 10\) but dapi.tif has shape \(64, 80\)",
        ),
        (None, TypeError, r"prior_labels.tif: labels must be integers .*float32"),
        ("uint32", ValueError, r"prior_labels.tif: the largest cell id is 3000000000, far above the number of pixels"),
    ],
    ids=["shape", "float", "uint32"],
)
def test_read_folder_bad_prior(folder, prior, error, message):
    _, labels, _, _ = tiny_arrays()
    if prior is None:
        prior = labels.astype(np.float32)
    elif isinstance(prior, str):
        prior = labels.astype(np.uint32)
        prior[prior == 3] = 3_000_000_000  # wrapped to a negative id by an int32 cast before
    tifffile.imwrite(folder / "prior_labels.tif", prior)
    with pytest.raises(error, match=message):
        gsn.io.read_folder(folder)


def test_read_folder_bad_transcripts_file(folder):
    (folder / "transcripts.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"transcripts.parquet: cannot be read as a parquet table"):
        gsn.io.read_folder(folder)


# ------------------------------------------------------------------------------------ empty segmentation
def test_empty_segmentation_warns_what_to_try(sdata, monkeypatch, caplog):
    def nothing(runner, inputs, window, core, shape, **kwargs):
        return np.zeros((4, *core.shape), np.float32)

    monkeypatch.setattr(gsn.models._inference, "predict_window", nothing)
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.tl.segment(sdata, missed_nuclei=False)  # the stain's nuclei would otherwise become cells
    text = caplog.text
    assert "GeneSegNet found no cell on image 'dapi' with points 'transcripts'" in text
    assert "no 'genesegnet_boundaries' (spatialdata cannot store an empty shapes element)" in text
    for hint in ("`image_key`/`points_key`", "`pixel_size=`", "the model", "`mask_threshold`/`center_threshold`"):
        assert hint in text
    assert sdata["genesegnet_table"].n_obs == 0 and "genesegnet_boundaries" not in sdata


# ------------------------------------------------------------------------------------ training reproducibility
def _train_with_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        synth = gsn.datasets.synthetic(shape=(96, 96), seed=11)
        return gsn.tl.train(synth, labels_key="truth_labels", widths=[4, 8, 16, 16], crop_size=48, batch_size=4,
                            epochs=2, steps_per_epoch=3, seed=0)  # fmt: skip
    finally:
        torch.set_num_threads(before)


def test_training_reproducibility_across_thread_counts():
    # What the train docstring promises: bit-identical for the same thread count, last digits otherwise.
    one, again, two = _train_with_threads(1), _train_with_threads(1), _train_with_threads(2)
    assert one.identity == again.identity
    np.testing.assert_allclose([h["loss"] for h in two.history], [h["loss"] for h in one.history], rtol=1e-4)
