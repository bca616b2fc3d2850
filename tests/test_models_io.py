import pytest
import torch

from gsn.models import GeneSegNetModel, ModelConfig, as_model, load

TINY = [4, 8, 8, 16]


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = GeneSegNetModel(ModelConfig(channels=["DAPI"], widths=TINY, sigma=9.0, pixel_size=0.5))
    m.config.history.append({"epoch": 1, "loss": 1.5})
    return m


def test_save_load_roundtrip(tmp_path, model):
    path = tmp_path / "sub" / "model.pt"
    model.save(path)
    loaded = load(path)
    assert loaded.identity == model.identity
    assert loaded.config == model.config
    assert loaded.source == str(path)
    assert not loaded.net.training
    x = torch.rand(1, 2, 24, 24)
    model.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x).offsets, model.net(x).offsets)
    assert as_model(str(path)).identity == model.identity
    desc = loaded.describe()
    assert desc["identity"] == model.identity and desc["widths"] == TINY and desc["n_epochs_trained"] == 1
    assert "GeneSegNetModel(" in repr(loaded)


def test_identity_changes_with_weights(model):
    other = model.copy()
    assert other.identity == model.identity
    with torch.no_grad():
        next(other.net.parameters()).add_(1.0)
    assert other.identity != model.identity


def _payload(model):
    from dataclasses import asdict

    return {"format": "gsn.GeneSegNetModel", "format_version": 1, "config": asdict(model.config),
            "state_dict": model.net.state_dict()}  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.pop("format"), "'format'"),
        (lambda p: p.update(format_version=99), "'format_version' is 99"),
        (lambda p: p.pop("format_version"), "'format_version'"),
        (lambda p: p.pop("config"), "'config'"),
        (lambda p: p["config"].pop("sigma"), "'config.sigma'"),
        (lambda p: p["config"].update(widths="big"), "'config.widths'"),
        (lambda p: p["config"].update(channels=[]), "'config.channels'"),
        (lambda p: p.pop("state_dict"), "'state_dict'"),
        (lambda p: p["config"].update(widths=[8, 8, 8, 16]), "'state_dict' does not fit"),
    ],
)
def test_bad_model_files_name_the_field(tmp_path, model, edit, message):
    payload = _payload(model)
    edit(payload)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


def test_default_model_ships_with_the_package():
    from gsn.models._model import DEFAULT_MODEL_PATH

    model = as_model(None)
    assert model.source == str(DEFAULT_MODEL_PATH)
    assert DEFAULT_MODEL_PATH.stat().st_size < 8e6  # a few MB at most
    again = load("default")
    assert again.config.widths == model.config.widths and again.config.pixel_size == model.config.pixel_size
    with pytest.raises(TypeError):
        as_model(3)


def test_config_and_net_must_agree():
    from gsn.models import GeneSegUNet

    with pytest.raises(ValueError, match="does not match"):
        GeneSegNetModel(ModelConfig(channels=["DAPI", "CD45"], widths=TINY), GeneSegUNet(2, TINY))
