"""The GeneSegNet network: a residual U-Net with confidence, centre and offset heads (Eqs. 7-9)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_WIDTHS: tuple[int, ...] = (32, 64, 128, 256)
"""Channel widths of the paper's four scales (full, 1/2, 1/4 and 1/8 resolution)."""

SLIM_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
"""A four times cheaper variant for CPU training and inference."""

DEFAULT_OFFSET_SCALE = 10.0
"""Pixels per unit of the raw offset head (see :class:`GeneSegUNet`)."""


class UNetOutput(NamedTuple):
    """Raw outputs of :class:`GeneSegUNet`, each of shape ``(B, ., H, W)``.

    Attributes
    ----------
    mask_logits
        Confidence map ``M`` before the sigmoid, ``(B, 1, H, W)``. Kept as logits so the loss can
        use the numerically stable ``binary_cross_entropy_with_logits``.
    center_logits
        Centre map ``C`` before the sigmoid, ``(B, 1, H, W)``.
    offsets
        Offset map ``V`` in pixels, ``(B, 2, H, W)``, channel order ``(dy, dx)`` (rows, columns):
        ``p + V(p)`` is the predicted centre of the cell that pixel ``p`` belongs to.
    """

    mask_logits: torch.Tensor
    center_logits: torch.Tensor
    offsets: torch.Tensor


class _PreActBlock(nn.Module):
    """Pre-activation residual block: ``(BN-ReLU-Conv3x3) x 2 + shortcut`` (He et al. 2016).

    The shortcut is the identity when the width does not change, otherwise a 1x1 projection. When
    ``skip_channels`` is set, the encoder feature map of the same resolution is added after the
    first convolution, as in the paper's decoder (Eq. 8).
    """

    def __init__(self, in_ch: int, out_ch: int, *, with_skip: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.proj = None if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.with_skip = with_skip

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        if self.with_skip:
            h = h + skip
        h = self.conv2(F.relu(self.bn2(h)))
        return h + (x if self.proj is None else self.proj(x))


class GeneSegUNet(nn.Module):
    """Residual U-Net of GeneSegNet (paper Eqs. 7-9).

    Input is ``[I, G]`` (nucleus image and RNA location map, both in [0, 1]) plus any extra stains,
    shape ``(B, in_channels, H, W)``; any ``H, W`` works (padded internally to a multiple of
    ``2 ** (len(widths) - 1)`` and cropped back).

    Layout, for the default ``widths=(32, 64, 128, 256)``:

    - stem: Conv3x3 (``in_channels -> 32``), so the first pre-activation BN-ReLU does not throw
      away the negative half of the raw inputs;
    - encoder: four scales at full, 1/2, 1/4 and 1/8 resolution; scales 2-4 start with a 2x2
      max-pool; every scale has two pre-activation residual blocks (BN-ReLU-Conv3x3 twice plus an
      identity or 1x1-projection shortcut), Eq. 7;
    - decoder: mirrors the encoder: per scale, 2x bilinear upsampling then two residual blocks, the
      first of which adds the encoder feature map of that scale (additive skip connection, Eq. 8);
    - heads: BN-ReLU on the 32-channel full-resolution map, then three 1x1 convolutions: confidence
      ``M`` and centre ``C`` (sigmoid at inference; logits are returned) and the two-channel offset
      ``V`` (linear), Eq. 9.

    The paper pools before *every* scale (four pools); like the authors' code we keep the first
    scale at full resolution (three pools), so skip connections exist at full resolution.

    The offset head is linear and its output is multiplied by ``offset_scale`` (10 px by default):
    the head works in units of ``offset_scale`` pixels, which keeps its initial outputs and
    gradients on the same scale as the other heads, while :meth:`forward` returns pixels.

    Size for the default widths and two input channels: 3,806,468 parameters and 0.56 MFLOP per
    input pixel for one forward pass (0.28 M multiply-accumulates; convolutions only, measured with
    :func:`flops_per_pixel` on a 256 x 256 input). ``SLIM_WIDTHS = (16, 32, 64, 128)``: 953,220
    parameters and 0.14 MFLOP per pixel.

    Parameters
    ----------
    in_channels
        Number of input channels (2 for ``[I, G]``).
    widths
        Channel width of each scale, finest first. Four entries reproduce the paper.
    offset_scale
        Pixels per unit of the raw offset head.
    """

    def __init__(
        self,
        in_channels: int = 2,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        *,
        offset_scale: float = DEFAULT_OFFSET_SCALE,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must hold at least two positive integers, got {widths}.")
        self.in_channels = int(in_channels)
        self.widths = widths
        self.offset_scale = float(offset_scale)

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.encoder = nn.ModuleList()
        prev = widths[0]
        for w in widths:
            self.encoder.append(nn.ModuleList([_PreActBlock(prev, w), _PreActBlock(w, w)]))
            prev = w
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.decoder.append(
                nn.ModuleList(
                    [_PreActBlock(widths[i + 1], widths[i], with_skip=True), _PreActBlock(widths[i], widths[i])]
                )
            )
        self.head_bn = nn.BatchNorm2d(widths[0])
        self.head_mask = nn.Conv2d(widths[0], 1, 1)
        self.head_center = nn.Conv2d(widths[0], 1, 1)
        self.head_offset = nn.Conv2d(widths[0], 2, 1)
        # Start the centre map near 0 (a centre is rare): sigmoid(-4) ~ 0.018, as RetinaNet's prior.
        nn.init.constant_(self.head_center.bias, -4.0)

    @property
    def multiple(self) -> int:
        """Input sizes are padded to a multiple of this internally."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> UNetOutput:
        """Run the network.

        Parameters
        ----------
        x
            ``(B, in_channels, H, W)`` float tensor.

        Returns
        -------
        :class:`UNetOutput` with tensors of spatial size ``(H, W)``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Zero padding matches what the network sees beyond the image border during tiling.
            x = F.pad(x, (0, pw, 0, ph))

        z = self.stem(x)
        skips = []
        for i, (b1, b2) in enumerate(self.encoder):
            if i > 0:
                z = F.max_pool2d(z, 2)
            z = b2(b1(z))
            skips.append(z)
        for j, (b1, b2) in enumerate(self.decoder):
            skip = skips[-2 - j]
            z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = b2(b1(z, skip))
        z = F.relu(self.head_bn(z))
        out = UNetOutput(
            self.head_mask(z)[..., :h, :w],
            self.head_center(z)[..., :h, :w],
            self.head_offset(z)[..., :h, :w] * self.offset_scale,
        )
        return out


def count_parameters(net: nn.Module) -> int:
    """Count the trainable parameters of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def flops_per_pixel(net: GeneSegUNet, size: int = 256) -> float:
    """Measure the forward-pass FLOPs per input pixel with :class:`torch.utils.flop_counter.FlopCounterMode`.

    Counts convolutions (2 FLOPs per multiply-accumulate) on a ``size x size`` input; batch norm,
    activations, pooling and upsampling are a few per cent on top and are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    x = torch.zeros(1, net.in_channels, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    net.train(was_training)
    return counter.get_total_flops() / (size * size)
