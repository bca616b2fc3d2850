import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from skimage.segmentation import expand_labels

import gsn
from gsn.models import _recursive
from gsn.models._growth import erode_labels
from gsn.models._recursive import check_training_labels, label_agreement
from gsn.tl._train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = (4, 8, 8, 8)
# prior="cells": these tests follow the labels round by round, so the prior is not grown first.
FAST = {"widths": TINY, "crop_size": 48, "batch_size": 2, "steps_per_epoch": 2, "epochs": 1, "prior": "cells"}


@pytest.fixture(scope="module")
def synth():
    return gsn.datasets.synthetic(shape=(96, 96), seed=5)


@pytest.fixture
def growing(monkeypatch):
    """Replace the network's label update by 'grow every cell by 1 px' (never converges at IoU 0.99)."""
    calls = []

    def fake(model, inputs, **kwargs):
        calls.append(kwargs)
        return expand_labels(fake.current[len(calls) - 1], 1).astype(np.int32)

    monkeypatch.setattr(_recursive, "update_labels", fake)
    fake.calls = calls
    return fake


def _with_labels(sdata, labels):
    import spatialdata as sd
    from spatialdata.models import Labels2DModel

    out = sd.SpatialData(images=dict(sdata.images), points=dict(sdata.points))
    out.labels["lab"] = Labels2DModel.parse(labels, dims=("y", "x"))
    return out


# ---------------------------------------------------------------------------------------------- criterion
def test_label_agreement():
    a = np.zeros((20, 20), int)
    a[2:6, 2:6] = 1
    a[10:14, 10:14] = 2
    assert label_agreement(a, a)[0] == 1.0
    b = np.zeros_like(a)
    b[2:6, 2:8] = 7  # cell 1 grown to 24 px: IoU 16/24; cell 2 gone: 0
    mean, best = label_agreement(a, b)
    np.testing.assert_allclose(best, [16 / 24, 0.0])
    assert mean == pytest.approx(1 / 3)
    assert label_agreement(a, np.zeros_like(a))[0] == 0.0
    assert np.isnan(label_agreement(np.zeros_like(a), a)[0])


def test_check_training_labels():
    lab = np.zeros((30, 30), np.int64)
    lab[1:4, 1:4] = 5
    lab[10:14, 10:14] = 1000
    out = check_training_labels(lab)
    assert out.dtype == np.int32 and sorted(np.unique(out)) == [0, 1, 2]
    np.testing.assert_array_equal(out > 0, lab > 0)
    with pytest.raises(ValueError, match=r"shape \(30, 30\) do not match the image's shape \(30, 31\)"):
        check_training_labels(lab, (30, 31))
    with pytest.raises(ValueError, match="foreground"):
        check_training_labels(np.ones((30, 30), int))
    with pytest.raises(TypeError, match="boolean mask"):
        check_training_labels(lab > 0)
    with pytest.raises(ValueError, match="negative"):
        check_training_labels(-lab)
    assert not check_training_labels(np.zeros((5, 5), np.uint8)).any()


# ---------------------------------------------------------------------------------------------- the loop
def test_rounds_history_stop_rule_and_plot(synth, growing, tmp_path):
    prior = np.asarray(synth.labels["prior_labels"].values)
    growing.current = [prior, expand_labels(prior, 1), expand_labels(prior, 2)]
    before = prior.copy()
    model = train(synth, labels_key="prior_labels", max_rounds=3, iou_stop=0.99, nu=2.0, **FAST)
    assert [r["round"] for r in model.rounds] == [1, 2, 3]
    assert [h["round"] for h in model.history] == [1, 2, 3]
    assert growing.calls[0]["nu"] == 2.0 and growing.calls[0]["refine"] == "grow"
    assert growing.calls[0]["transcripts"] is not None
    r1 = model.rounds[0]
    assert {"loss", "mean_iou", "n_cells", "mean_area", "seconds", "n_cells_in", "mean_area_in"} <= set(r1)
    assert r1["mean_iou"] == pytest.approx(label_agreement(prior, expand_labels(prior, 1))[0])
    assert model.rounds[1]["mean_area"] > r1["mean_area"] > r1["mean_area_in"]
    np.testing.assert_array_equal(model.labels[0], expand_labels(expand_labels(prior, 2), 1))
    np.testing.assert_array_equal(synth.labels["prior_labels"].values, before)  # the user's data untouched
    # saved with the model and plottable
    model.save(tmp_path / "m.pt")
    loaded = gsn.models.load(tmp_path / "m.pt")
    assert loaded.rounds == model.rounds and loaded.labels is None
    assert "rounds" not in loaded.describe()
    axes = gsn.pl.training_history(loaded, show=False)
    assert len(axes) == 3 and [t.get_text() for t in axes[0].texts] == ["round 1", "round 2", "round 3"]
    plt.close("all")


def test_stops_when_labels_agree(synth, monkeypatch):
    monkeypatch.setattr(_recursive, "update_labels", lambda model, inputs, **kw: check_training_labels(
        np.asarray(synth.labels["prior_labels"].values)))  # fmt: skip
    model = train(synth, labels_key="prior_labels", max_rounds=4, **FAST)
    assert len(model.rounds) == 1 and model.rounds[0]["mean_iou"] == 1.0 and model.rounds[0]["converged"]


def test_no_predicted_cells_stops_with_previous_labels(synth, monkeypatch):
    monkeypatch.setattr(_recursive, "update_labels", lambda model, inputs, **kw: np.zeros(inputs.shape[1:], np.int32))
    model = train(synth, labels_key="prior_labels", max_rounds=3, **FAST)
    assert len(model.rounds) == 1 and model.rounds[0]["n_cells"] == 0
    np.testing.assert_array_equal(model.labels[0] > 0, np.asarray(synth.labels["prior_labels"].values) > 0)


def test_single_round_is_unchanged(synth):
    a = train(synth, labels_key="prior_labels", seed=2, **FAST)
    assert a.rounds == [] and "round" not in a.history[0] and a.labels is None


def test_real_label_update_runs(synth):
    # the real predict -> decode -> level-set path (a tiny net may find few or no cells: only check the records)
    model = train(synth, labels_key="truth_labels", max_rounds=2, **{**FAST, "epochs": 2})
    assert 1 <= len(model.rounds) <= 2 and model.labels[0].shape == (96, 96)


def test_cold_start_restarts_weights(synth, growing):
    prior = np.asarray(synth.labels["prior_labels"].values)
    growing.current = [prior, expand_labels(prior, 1)]
    warm = train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=0.99, **FAST)
    growing.calls.clear()
    cold = train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=0.99, warm_start=False, **FAST)
    assert len(cold.history) == 2 and cold.config.train_params["warm_start"] is False
    assert cold.identity != warm.identity


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_resume_equals_uninterrupted_run(synth, growing, tmp_path):
    prior = np.asarray(synth.labels["prior_labels"].values)
    growing.current = [prior, expand_labels(prior, 1), expand_labels(prior, 2)]
    full = train(synth, labels_key="prior_labels", max_rounds=3, iou_stop=0.99, **FAST)

    growing.calls.clear()
    ckpt = tmp_path / "run.ckpt"
    part = train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=0.99, checkpoint=ckpt, **FAST)
    assert ckpt.is_file() and len(part.rounds) == 2
    growing.calls.clear()
    growing.current = growing.current[2:]  # the resumed run makes one label update, from Y(3)
    resumed = train(synth, labels_key="prior_labels", max_rounds=3, iou_stop=0.99, checkpoint=ckpt, resume=True,
                    **FAST)  # fmt: skip
    assert len(growing.calls) == 1
    assert [r["round"] for r in resumed.rounds] == [1, 2, 3] and len(resumed.history) == 3
    assert resumed.identity == full.identity
    np.testing.assert_array_equal(resumed.labels[0], full.labels[0])

    # resuming a finished run does nothing
    growing.calls.clear()
    again = train(synth, labels_key="prior_labels", max_rounds=3, iou_stop=0.99, checkpoint=ckpt, resume=True, **FAST)
    assert not growing.calls and again.identity == full.identity


def test_resume_with_changed_configuration_is_refused(synth, growing, tmp_path):
    prior = np.asarray(synth.labels["prior_labels"].values)
    growing.current = [prior, expand_labels(prior, 1)]
    ckpt = tmp_path / "run.ckpt"
    train(synth, labels_key="prior_labels", max_rounds=1, checkpoint=ckpt, **FAST)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in epochs, nu \(epochs: checkpoint 1, now 2"):
        train(synth, labels_key="prior_labels", max_rounds=2, checkpoint=ckpt, resume=True, nu=3.0,
              **{**FAST, "epochs": 2})  # fmt: skip
    other = gsn.datasets.synthetic(shape=(96, 96), seed=6)
    with pytest.raises(ValueError, match="sample_0"):
        train(other, labels_key="prior_labels", max_rounds=2, checkpoint=ckpt, resume=True, **FAST)
    (tmp_path / "junk").write_text("no")
    with pytest.raises(ValueError, match="not a readable torch file"):
        train(synth, labels_key="prior_labels", max_rounds=2, checkpoint=tmp_path / "junk", resume=True, **FAST)


# ---------------------------------------------------------------------------------------------- bad labels
def test_bad_training_labels(synth):
    prior = np.asarray(synth.labels["prior_labels"].values)
    with pytest.raises(ValueError, match="'lab' contain no cells"):
        train(_with_labels(synth, np.zeros_like(prior)), labels_key="lab", max_rounds=2, **FAST)
    giant = np.zeros_like(prior)
    giant[5:90, 5:90] = 1
    with pytest.raises(ValueError, match="cell 1 covers 78% of the image"):
        train(_with_labels(synth, giant), labels_key="lab", max_rounds=2, **FAST)
    with pytest.raises(ValueError, match="not on the pixel grid"):
        train(_with_labels(synth, prior[:80]), labels_key="lab", max_rounds=2, **FAST)
    # ids with gaps and huge values train exactly like the consecutive ones
    a = train(_with_labels(synth, prior), labels_key="lab", seed=1, **FAST)
    b = train(_with_labels(synth, np.where(prior > 0, prior * 1000 + 7, 0)), labels_key="lab", seed=1, **FAST)
    assert a.identity == b.identity


def test_bad_loop_arguments(synth, tmp_path):
    with pytest.raises(ValueError, match="max_rounds"):
        train(synth, labels_key="prior_labels", max_rounds=0, **FAST)
    with pytest.raises(ValueError, match="iou_stop"):
        train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=1.5, **FAST)


def test_a_round_that_finds_no_cells_is_undone(synth, monkeypatch):
    """Round 2's network predicts nothing: the model of round 1, which made the current labels, is returned."""
    prior = check_training_labels(np.asarray(synth.labels["prior_labels"].values))
    states = []

    def update(model, inputs, **kw):
        states.append({k: v.clone() for k, v in model.net.state_dict().items()})
        return prior if len(states) == 1 else np.zeros(inputs.shape[1:], np.int32)

    monkeypatch.setattr(_recursive, "update_labels", update)
    model = train(synth, labels_key="prior_labels", max_rounds=3, iou_stop=1.0, **FAST)
    assert [r["round"] for r in model.rounds] == [1, 2] and model.rounds[1].get("reverted")
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, states[0][k]), k
    assert not torch.equal(states[0][next(iter(states[0]))], states[1][next(iter(states[1]))])


# ---------------------------------------------------------------------------------------------- growth between rounds
@pytest.fixture
def network_returns(monkeypatch):
    """Make the 'network' decode to whatever labels the test sets (no training needed)."""
    state = {}
    from types import SimpleNamespace

    maps = SimpleNamespace(mask=0, center=0, offsets=0)
    monkeypatch.setattr(_recursive, "predict_maps", lambda net, inputs, **kw: maps)
    monkeypatch.setattr(_recursive, "decode_instances", lambda *a, **kw: state["labels"].copy())
    return state


def _tx(sdata):
    tx = sdata["transcripts"].compute()
    return tx["x"].to_numpy(), tx["y"].to_numpy(), tx["gene"].cat.codes.to_numpy(np.int64)


def test_update_labels_modes(synth, network_returns):
    prior = check_training_labels(np.asarray(synth.labels["prior_labels"].values))
    network_returns["labels"] = prior
    inputs = np.zeros((2, *prior.shape), np.float32)
    model = object.__new__(gsn.models.GeneSegNetModel)
    model.net = None
    none = _recursive.update_labels(model, inputs, refine="none")
    np.testing.assert_array_equal(none, prior)
    grown = _recursive.update_labels(model, inputs, refine="grow", transcripts=_tx(synth), pixel_size=0.5)
    # whole cells around the same nuclei: one cell per nucleus, larger, covering the nuclei's cores
    assert len(np.unique(grown)) == len(np.unique(prior))
    assert np.count_nonzero(grown) > 1.5 * np.count_nonzero(prior)
    core = erode_labels(prior, 2) > 0
    assert np.all(grown[core] > 0)
    with pytest.raises(ValueError, match="needs the transcripts"):
        _recursive.update_labels(model, inputs, refine="grow")
    with pytest.raises(ValueError, match="`refine` must be one of"):
        _recursive.update_labels(model, inputs, refine="dilate")


def test_regrowing_from_eroded_anchors_does_not_drift(synth, network_returns):
    """A network that returns its training labels: repeated grow updates converge instead of growing every round."""
    labels = check_training_labels(np.asarray(synth.labels["prior_labels"].values))
    model = object.__new__(gsn.models.GeneSegNetModel)
    model.net = None
    inputs = np.zeros((2, *labels.shape), np.float32)
    areas = [np.count_nonzero(labels)]
    for _ in range(4):
        network_returns["labels"] = labels
        new = _recursive.update_labels(model, inputs, refine="grow", transcripts=_tx(synth), pixel_size=0.5)
        last_iou = label_agreement(labels, new)[0]
        labels = new
        areas.append(np.count_nonzero(labels))
    assert areas[1] > 1.5 * areas[0]  # the first update grows nuclei into cells
    assert abs(areas[-1] / areas[-2] - 1) < 0.05 and last_iou > 0.9, areas  # then it settles


def test_erode_labels_keeps_every_cell():
    lab = np.zeros((20, 20), np.int32)
    lab[2:12, 2:12] = 1
    lab[2:12, 12:18] = 2  # touching cell 1
    lab[15, 15] = 3  # a single pixel: would vanish
    out = erode_labels(lab, 2)
    assert set(np.unique(out)) == {0, 1, 2, 3}
    assert np.count_nonzero(out == 1) == 36 and out[15, 15] == 3
    assert not np.any((out[:, 11:13] > 0) & (out[:, 12:14] > 0))  # a gap opens where the cells touched


def test_prior_kind_detection_and_growth(synth, caplog):
    from gsn.tl._train import _prepare_prior

    prior = check_training_labels(np.asarray(synth.labels["prior_labels"].values))
    truth = check_training_labels(np.asarray(synth.labels["truth_labels"].values))
    tx = _tx(synth)
    kw = {"max_distance": 8.0, "seed": 0, "name": "labels"}
    same, kind = _prepare_prior(prior, tx, 0.5, prior="auto", grow=False, **kw)
    assert kind == "nuclei" and same is prior  # nuclei are learnt as nuclei by default
    grown, kind = _prepare_prior(prior, tx, 0.5, prior="auto", grow=True, **kw)
    assert kind == "cells" and len(np.unique(grown)) == len(np.unique(prior))
    assert np.count_nonzero(grown) > 1.5 * np.count_nonzero(prior)
    kept, kind = _prepare_prior(truth, tx, 0.5, prior="auto", grow=True, **kw)  # whole cells are not grown
    assert kind == "cells" and kept is truth
    with caplog.at_level("WARNING", logger="gsn"):
        _prepare_prior(truth, tx, 0.5, prior="nuclei", grow=False, **kw)
    assert "looks like cells, but prior='nuclei'" in caplog.text
    with pytest.raises(ValueError, match="`prior` must be one of"):
        train(synth, labels_key="prior_labels", **{**FAST, "prior": "nucleus"})


def test_refine_auto_follows_what_the_network_learns(synth, growing):
    prior = np.asarray(synth.labels["prior_labels"].values)
    growing.current = [prior, prior]
    nuclei = train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=0.99, **{**FAST, "prior": "nuclei"})
    assert growing.calls[0]["refine"] == "levelset" and nuclei.config.train_params["labels_kind"] == "nuclei"
    growing.calls.clear()
    grown = train(synth, labels_key="prior_labels", max_rounds=2, iou_stop=0.99, grow_prior=True,
                  **{**FAST, "prior": "nuclei"})  # fmt: skip
    assert growing.calls[0]["refine"] == "grow" and grown.config.train_params["labels_kind"] == "cells"
