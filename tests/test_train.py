import numpy as np
import pytest
import torch

import gsn
from gsn.models import Augmentation, GeneSegNetModel, ModelConfig, TrainingSample, random_crop, train_network
from gsn.tl._train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = (4, 8, 16, 16)
FAST = {"widths": TINY, "crop_size": 48, "batch_size": 4, "steps_per_epoch": 3}


@pytest.fixture(scope="module")
def synth():
    return gsn.datasets.synthetic(shape=(96, 96), seed=5)


def _sample(sdata):
    from gsn.tl._segment import prepare_inputs

    prep = prepare_inputs(sdata, image_key=None, points_key=None, sigma=7.0)
    return TrainingSample(prep.inputs, np.asarray(sdata.labels["truth_labels"].values))


def test_loss_drops_on_a_synthetic_sample(synth):
    torch.manual_seed(0)
    model = GeneSegNetModel(ModelConfig(widths=list(TINY)))
    train_network(model, [_sample(synth)], epochs=10, steps_per_epoch=4, batch_size=4, crop_size=48, lr=1e-2,
                  device="cpu", progress=False)  # fmt: skip
    losses = [h["loss"] for h in model.history]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.85 * losses[0]
    assert {"loss_mask", "loss_center", "loss_offset", "lr", "seconds"} <= set(model.history[0])
    assert not model.net.training


def test_tl_train_is_deterministic_and_records_config(synth):
    other = gsn.datasets.synthetic(shape=(64, 80), seed=6)
    a = train([synth, other], labels_key="truth_labels", epochs=2, seed=3, **FAST)
    b = train([synth, other], labels_key="truth_labels", epochs=2, seed=3, **FAST)
    assert a.identity == b.identity
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.channels == ["DAPI"] and a.config.pixel_size == 0.5 and a.config.widths == list(TINY)
    assert a.config.train_params["n_samples"] == 2
    # warm start continues the history
    c = train(synth, labels_key="truth_labels", epochs=1, model=a, **FAST)
    assert c is a and len(c.history) == 3


def test_random_crop_keeps_inputs_and_labels_aligned():
    lab = np.zeros((60, 70), np.int32)
    lab[10:30, 5:25] = 1
    lab[35:55, 30:60] = 2
    sample = TrainingSample(np.stack([lab > 0, lab == 2]).astype(np.float32), lab)
    rng = np.random.default_rng(0)
    x, y = random_crop(rng, sample, 40, Augmentation((1.0, 1.0), rotate=False, flip=False), margin=0)
    np.testing.assert_array_equal(x[0] > 0.5, y > 0)  # identity transform: exact crop
    for _ in range(5):
        x, y = random_crop(rng, sample, 40, Augmentation(), margin=6)
        inner = y[6:-6, 6:-6]
        agree = np.mean((x[0] > 0.5) == (inner > 0))
        assert agree > 0.95  # bilinear vs nearest differ only on edges
        assert y.shape == (52, 52)


def test_images_smaller_than_the_crop(synth):
    small = gsn.datasets.synthetic(shape=(32, 40), seed=7)
    model = train(small, labels_key="truth_labels", epochs=1, **FAST)
    assert np.isfinite(model.history[0]["loss"])


def test_errors(synth):
    with pytest.raises(ValueError, match="no cells"):
        train_network(GeneSegNetModel(ModelConfig(widths=list(TINY))),
                      [TrainingSample(np.zeros((2, 32, 32)), np.zeros((32, 32), int))], progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="input channels"):
        train_network(GeneSegNetModel(ModelConfig(channels=["a", "b"], widths=list(TINY))), [_sample(synth)],
                      progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="No training samples"):
        train_network(GeneSegNetModel(), [], progress=False)
    with pytest.raises(KeyError):
        train(synth, labels_key="nope", epochs=1, **FAST)


def test_starting_model_is_the_default_where_it_fits(synth, caplog):
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    from gsn.tl._train import _starting_model

    default = _starting_model("default", synth, image_key=None, channels=None, widths_given=False)
    assert default.identity == gsn.models.load("default").identity
    assert _starting_model("default", synth, image_key=None, channels=None, widths_given=True) is None
    two = sd.SpatialData(images={"img": Image2DModel.parse(np.zeros((2, 32, 32), np.uint16), dims=("c", "y", "x"))})
    with caplog.at_level("INFO", logger="gsn"):
        assert _starting_model("default", two, image_key=None, channels=None, widths_given=False) is None
    assert "2 channels and the default model 1" in caplog.text
    assert _starting_model(None, synth, image_key=None, channels=None, widths_given=False) is None


def test_fine_tunes_the_default_model(synth):
    start = gsn.models.load("default")
    model = train(synth, labels_key="truth_labels", epochs=1, steps_per_epoch=2, batch_size=2, crop_size=64)
    assert model.config.widths == start.config.widths and model.config.pixel_size == start.config.pixel_size
    assert model.identity != start.identity  # trained
    assert model.config.train_params["lr"] == gsn.tl._train.FINE_TUNE_LR
