import pytest
import torch

from gsn.models import DEFAULT_WIDTHS, SLIM_WIDTHS, GeneSegUNet, count_parameters, flops_per_pixel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = (4, 8, 8, 16)


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (8, 9), (1, 1)])
def test_output_shapes_for_any_size(shape):
    net = GeneSegUNet(2, TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, *shape))
    assert out.mask_logits.shape == (2, 1, *shape)
    assert out.center_logits.shape == (2, 1, *shape)
    assert out.offsets.shape == (2, 2, *shape)


def test_extra_channels_and_three_scales():
    net = GeneSegUNet(3, (4, 8, 16)).eval()
    assert net.multiple == 4
    with torch.no_grad():
        out = net(torch.rand(1, 3, 30, 30))
    assert out.offsets.shape == (1, 2, 30, 30)


def test_wrong_input_channels_raises():
    net = GeneSegUNet(2, TINY)
    with pytest.raises(ValueError, match="Expected input of shape"):
        net(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("widths", [(8,), (8, 0, 4)])
def test_bad_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        GeneSegUNet(2, widths)


def test_documented_size_of_default_and_slim_models():
    # These numbers are quoted in the GeneSegUNet docstring and docs/model.md.
    default, slim = GeneSegUNet(2, DEFAULT_WIDTHS), GeneSegUNet(2, SLIM_WIDTHS)
    assert count_parameters(default) == 3_806_468
    assert count_parameters(slim) == 953_220
    assert flops_per_pixel(default, size=64) == pytest.approx(0.56e6, rel=0.01)
    assert flops_per_pixel(slim, size=64) == pytest.approx(0.14e6, rel=0.01)


def test_gradients_reach_every_parameter():
    net = GeneSegUNet(2, TINY)
    out = net(torch.rand(2, 2, 32, 32))
    (out.mask_logits.sum() + out.center_logits.sum() + out.offsets.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
