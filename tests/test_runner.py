"""gsn.models.TileRunner: folding is exact, bf16 stays within the stated tolerance, threads and settings."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from tests.conftest import data_folder

import gsn
from gsn.models import GeneSegUNet, TileRunner, as_model, predict_maps
from gsn.models import _runner as runner_mod
from gsn.models._runner import _ThreadChooser

pytestmark = pytest.mark.usefixtures("one_torch_thread")

needs_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no oneDNN bf16 convolutions"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def reference_maps(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The maps computed by the unfolded fp32 network, as predict_maps did before the runner."""
    net = net.eval()
    with torch.no_grad():
        out = net(x)
    return torch.cat([torch.sigmoid(out.mask_logits), torch.sigmoid(out.center_logits), out.offsets], 1)


def scrambled_net(in_channels=3, widths=(4, 8, 16), seed=0) -> GeneSegUNet:
    """A small network whose batch norms have random statistics, some scales negative (the unfoldable cases)."""
    torch.manual_seed(seed)
    net = GeneSegUNet(in_channels, widths)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.normal_()
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def default_net() -> GeneSegUNet:
    return as_model(None).net


@pytest.fixture
def no_onednn(monkeypatch):
    monkeypatch.setattr(runner_mod, "_onednn_available", lambda: False)


@pytest.fixture
def restore_settings():
    names = ("precision", "threads", "compile", "max_batch")
    saved = {n: getattr(gsn.settings, n) for n in names}
    yield
    for n, v in saved.items():
        setattr(gsn.settings, n, v)


@pytest.mark.parametrize("backend", ["onednn", "folded module"])
def test_folded_fp32_equals_the_network(default_net, backend, request):
    if backend == "folded module":
        request.getfixturevalue("no_onednn")
    x = torch.from_numpy(np.random.default_rng(0).random((2, 2, 64, 72), dtype=np.float32))
    expected = reference_maps(default_net, x)
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        assert run.backend == backend
        got = run(x)
    assert got.dtype == torch.float32 and got.shape == (2, 4, 64, 72) and got.is_contiguous()
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("backend", ["onednn", "folded module"])
def test_folding_with_negative_scales_odd_sizes_and_three_scales(backend, request):
    if backend == "folded module":
        request.getfixturevalue("no_onednn")
    net = scrambled_net()
    folded = runner_mod.fold_network(net)
    assert folded.head_pre is not None or any(b.mid is not None for s in folded.decoder for b in s)  # kept BN
    x = torch.rand(3, 3, 37, 50)  # padded to a multiple of 4 inside, cropped back
    with TileRunner(net, "cpu", precision="fp32") as run:
        got = run(x.numpy())
    assert (got - reference_maps(net, x)).abs().max() < 1e-4
    assert net.stem.weight.is_contiguous()  # the caller's network is untouched


def test_runner_does_not_change_the_network(default_net):
    before = {k: v.clone() for k, v in default_net.state_dict().items()}
    default_net.train()
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        run(np.zeros((1, 2, 32, 32), np.float32))
    assert default_net.training
    default_net.eval()
    assert all(torch.equal(v, default_net.state_dict()[k]) for k, v in before.items())


@pytest.fixture(scope="module")
def xenium_window() -> np.ndarray:
    """A 512 x 512 px window of the Xenium crop's network inputs, built as gsn.tl.segment builds them."""
    from gsn.tl._segment import prepare_inputs

    cfg = as_model(None).config
    sdata = gsn.io.read_folder(data_folder("xenium_breast_bidcell"))
    prep = prepare_inputs(
        sdata, image_key=None, points_key=None, model_channels=cfg.channels, sigma=cfg.sigma, rna_mode=cfg.rna_mode,
        rna_scale=cfg.rna_scale, norm=(cfg.norm_low, cfg.norm_high), target_pixel_size=cfg.pixel_size,
    )  # fmt: skip
    return np.ascontiguousarray(prep.inputs[:, 200:712, 300:812])


@needs_bf16
def test_bf16_within_the_stated_tolerance_of_fp32(default_net, xenium_window):
    # Tolerance stated in docs/model.md ("CPU speed"), from whole crops of three platforms: foreground
    # IoU >= 0.995, mean |dp| <= 2e-3, max |dp| <= 0.06, offsets on the foreground within 0.035 px
    # on average. The bounds below leave a margin of 2-3x.
    a = predict_maps(default_net, xenium_window, precision="fp32", progress=False)
    b = predict_maps(default_net, xenium_window, precision="bf16", progress=False)
    fg_a, fg_b = a.mask >= 0.5, b.mask >= 0.5
    assert fg_a.mean() > 0.05  # the window has cells
    assert (fg_a & fg_b).sum() / (fg_a | fg_b).sum() >= 0.99
    for p, q in ((a.mask, b.mask), (a.center, b.center)):
        assert np.abs(p - q).mean() <= 5e-3 and np.abs(p - q).max() <= 0.1
    assert np.abs(a.offsets - b.offsets)[:, fg_a].mean() <= 0.1


def test_auto_precision_follows_the_hardware(default_net, restore_settings):
    gsn.settings.precision = "auto"
    with TileRunner(default_net, "cpu") as run:
        assert run.precision == ("bf16" if runner_mod._cpu_has_native_bf16() else "fp32")
    gsn.settings.precision = "fp32"
    with TileRunner(default_net, "cpu") as run:
        assert run.precision == "fp32"  # from the settings
    with TileRunner(default_net, "cpu", precision="auto") as run:
        assert run.precision in ("bf16", "fp32")  # the argument wins
    assert runner_mod.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert runner_mod.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_a_module_that_is_not_a_genesegunet_runs_unfolded_in_fp32():
    from tests.oracle import OracleNet

    net = OracleNet()
    x = torch.rand(2, 2, 40, 40)
    with TileRunner(net, "cpu") as run:
        assert run.backend == "module" and run.precision == "fp32"
        assert (run(x) - reference_maps(net, x)).abs().max() < 1e-6
    with pytest.raises(TypeError, match="GeneSegUNet"):
        TileRunner(torch.nn.ReLU(), "cpu")


def test_thread_count_set_then_restored(default_net):
    torch.set_num_threads(1)
    run = TileRunner(default_net, "cpu", precision="fp32", threads=2)
    assert run.threads == 2 and torch.get_num_threads() == 2
    run.close()
    assert torch.get_num_threads() == 1
    run(np.zeros((1, 2, 16, 16), np.float32))  # usable after close: sets its count again
    assert torch.get_num_threads() == 2
    run.close()
    with TileRunner(default_net, "cpu", precision="fp32", threads=2) as run:
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    predict_maps(default_net, np.zeros((2, 40, 40), np.float32), tile=32, threads=2, progress=False)
    assert torch.get_num_threads() == 1


def test_threads_from_the_settings_and_the_machine(default_net, restore_settings):
    gsn.settings.threads = 1
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        assert run.threads == 1 and run.describe()["threads_measured"] is None
    gsn.settings.threads = None
    assert 1 <= runner_mod.default_threads() <= runner_mod.cpu_count()
    assert runner_mod.default_threads() <= torch.get_num_threads()  # never above torch's own setting (1 here)


def test_runners_share_their_thread_chooser(default_net, restore_settings):
    if runner_mod.cpu_count() < 2:
        pytest.skip("one CPU: no thread count to choose")
    gsn.settings.threads = None
    torch.set_num_threads(2)  # the module fixture set 1; the chooser needs a choice
    try:
        with (
            TileRunner(default_net, "cpu", precision="fp32") as a,
            TileRunner(default_net, "cpu", precision="fp32") as b,
        ):
            assert a._chooser is b._chooser is not None
            a(np.zeros((1, 2, 32, 32), np.float32))
            assert a._chooser.calls >= 1 and a.describe()["threads_measured"]
    finally:
        torch.set_num_threads(1)


def test_thread_chooser_follows_the_timings():
    c = _ThreadChooser(2)
    seen = []
    fast = {2: 1.0, 1: 1.4}  # two threads faster, not by much: three calls each decide
    for _ in range(6):
        n = c.pick()
        seen.append(n)
        c.record(n, fast[n])
    assert seen == [2, 1, 2, 1, 2, 1] and c.current == 2
    slow = {2: 10.0, 1: 1.0}  # other jobs on the cores: threads wait for each other
    for _ in range(200):
        n = c.pick()
        seen.append(n)
        c.record(n, slow[n])
    assert c.current == 1
    late = seen[-100:]
    assert late.count(2) <= 2  # tries of the slow count are rare (10x slower: >= 90 calls apart)
    # A clear difference ends the calibration after one call each.
    c = _ThreadChooser(4)
    for _ in range(2):
        n = c.pick()
        c.record(n, {4: 5.0, 1: 1.0}[n])
    assert c.next_probe is not None and c.current == 1


def test_settings_are_checked(restore_settings):
    gsn.settings.precision = "BF16"
    assert gsn.settings.precision == "bf16"
    gsn.settings.threads = 3
    gsn.settings.threads = None
    gsn.settings.compile = True
    gsn.settings.compile = False
    for bad in ("fp8", 16, None):
        with pytest.raises(ValueError, match="precision"):
            gsn.settings.precision = bad
    with pytest.raises(ValueError, match="threads"):
        gsn.settings.threads = 0
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="threads"):
            gsn.settings.threads = bad
    with pytest.raises(TypeError, match="compile"):
        gsn.settings.compile = "yes"
    gsn.settings.max_batch = 2
    with pytest.raises(ValueError, match="max_batch"):
        gsn.settings.max_batch = -1
    with pytest.raises(ValueError, match="precision"):
        TileRunner(scrambled_net(), "cpu", precision="half")
    with pytest.raises(ValueError, match="Expected tiles"):
        TileRunner(scrambled_net(), "cpu", precision="fp32")(np.zeros((1, 2, 8, 8), np.float32))


def test_runner_pickles_without_its_prepared_copy(default_net):
    x = np.random.default_rng(1).random((1, 2, 48, 48), dtype=np.float32)
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        expected = run(x)
        blob = pickle.dumps(run)
    assert "_forward" not in run.__getstate__()  # the weights travel, the prepared copy does not
    other = pickle.loads(blob)  # prepared again on arrival
    with other:
        assert torch.equal(other(x), expected)
        assert other.describe()["backend"] == "onednn"


def test_batches_are_split_into_passes(default_net, restore_settings):
    x = np.random.default_rng(4).random((5, 2, 64, 64), dtype=np.float32)
    with TileRunner(default_net, "cpu", precision="fp32", max_batch=5) as run:
        whole = run(x)
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        assert run.batch_for(256 * 256) == 2 and run.batch_for(512 * 512) == 1 and run.batch_for(64 * 64) == 32
        gsn.settings.max_batch = 2
        assert run.batch_for(64 * 64) == 32  # the settings are read when the runner is made
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        assert run.batch_for(64 * 64) == 2
        split = run(x)
    assert (whole - split).abs().max() < 1e-5


def test_predict_maps_reuses_a_runner(default_net):
    x = np.random.default_rng(2).random((2, 100, 90), dtype=np.float32)
    with TileRunner(default_net, "cpu", precision="fp32") as run:
        a = predict_maps(default_net, x, tile=64, runner=run, progress=False)
        b = predict_maps(default_net, x, tile=64, runner=run, progress=False)
    c = predict_maps(default_net, x, tile=64, precision="fp32", progress=False)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.offsets, c.offsets, atol=1e-5)


@needs_cuda
def test_cuda_runner_and_accumulation_on_the_device(default_net):
    x = np.random.default_rng(3).random((2, 300, 280), dtype=np.float32)
    cpu = predict_maps(default_net, x, device="cpu", precision="fp32", progress=False)
    for precision in ("fp32", "fp16", "bf16"):
        with TileRunner(default_net, "cuda", precision=precision) as run:
            out = run(x[None, :, :256, :256])
            assert out.device.type == "cuda" and out.dtype == torch.float32
            gpu = predict_maps(default_net, x, runner=run, progress=False)
        fg_a, fg_b = cpu.mask >= 0.5, gpu.mask >= 0.5
        assert np.abs(cpu.mask - gpu.mask).mean() <= 5e-3
        assert (fg_a & fg_b).sum() >= 0.99 * max(1, (fg_a | fg_b).sum())
