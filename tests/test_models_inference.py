import dask.array as da
import numpy as np
import pytest
import torch

from gsn.models import GeneSegUNet, predict_maps, tile_starts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return GeneSegUNet(2, (4, 8, 8, 16)).eval()


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(256, 256, 0.5), (300, 64, 0.5), (1000, 256, 0.25), (10, 64, 0.5)]
)
def test_tile_starts_cover_the_axis(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(max(length, tile), int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered[:length].min() >= 1
    assert starts[0] == 0 and (length <= tile or starts[-1] + tile == length)
    if length >= 2 * tile and overlap == 0.5:
        assert np.median(covered[:length]) == 2  # each interior pixel seen twice per axis (4 times in 2D)


def test_single_tile_equals_direct_prediction(net):
    x = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    maps = predict_maps(net, x, tile=64, overlap=0.5, progress=False, precision="fp32")
    with torch.no_grad():
        out = net(torch.from_numpy(x)[None])
    np.testing.assert_allclose(maps.mask, torch.sigmoid(out.mask_logits)[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(maps.offsets, out.offsets[0].numpy(), atol=1e-4)


@pytest.mark.parametrize("blending", ["mean", "gaussian"])
def test_small_and_odd_images_and_dask_inputs(net, blending):
    x = np.random.default_rng(1).random((2, 45, 70), dtype=np.float32)
    a = predict_maps(net, x, tile=32, overlap=0.5, batch_size=3, blending=blending, progress=False)
    b = predict_maps(net, da.from_array(x, chunks=(2, 20, 20)), tile=32, overlap=0.5, batch_size=5,
                     blending=blending, progress=False)  # fmt: skip
    assert a.mask.shape == (45, 70) and a.offsets.shape == (2, 45, 70)
    assert np.isfinite(a.offsets).all() and 0 <= a.mask.min() and a.center.max() <= 1
    np.testing.assert_allclose(a.mask, b.mask, atol=1e-5)
    tiny = predict_maps(net, x[:, :10, :7], tile=64, progress=False)  # smaller than one tile: padded
    assert tiny.mask.shape == (10, 7)


def test_bad_arguments(net):
    x = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="expects 2 input channels"):
        predict_maps(net, x, progress=False)
    with pytest.raises(ValueError, match="overlap"):
        predict_maps(net, x[:2], overlap=1.0, progress=False)
    with pytest.raises(ValueError, match="blending"):
        predict_maps(net, x[:2], blending="max", progress=False)


def test_network_layout_and_device_restored(net):
    predict_maps(net, np.zeros((2, 40, 40), np.float32), tile=32, progress=False)
    w = net.stem.weight
    assert w.is_contiguous() and w.device.type == "cpu"
