"""Fast forward passes over batches of tiles: an inference copy of :class:`GeneSegUNet` prepared once.

:class:`TileRunner` turns a network into a function from tiles ``(B, C, T, T)`` to the four maps
``[M, C, dy, dx]`` (probabilities and pixels). It never changes the caller's network; it works on a
folded copy:

- eval-mode batch norm folded into the convolution before it where there is one (``bn2`` into
  ``conv1`` of every residual block), the three 1x1 heads merged into one convolution with the
  offset scale folded in;
- a batch norm that follows an addition (skip connection, residual sum before the heads) is split:
  its shift goes into the bias of the convolution whose sum it follows and its scale, when positive,
  moves through the ReLU (``relu(s * x) = s * relu(x)`` for ``s > 0``) into the weights of the
  convolution after it; a channel scale that is not positive keeps a separate batch norm;
- on a CPU with oneDNN every convolution runs as one fused oneDNN primitive with its bias, ReLU and
  residual addition as post-ops, and the remaining pre-activation batch norm + ReLU as a 1x1
  depthwise convolution with a ReLU post-op (one pass over memory instead of two); activations are
  kept in the channels-last layout;
- bf16 (CPU) or fp16/bf16 (CUDA) arithmetic where the hardware runs it natively, the offsets and
  sigmoids computed in fp32.

Measurements that chose these defaults: ``benchmarks/_network_throughput.py`` and docs/model.md,
"CPU speed".
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._logging import logger
from .._settings import check_count, check_precision
from ._model import resolve_device
from ._unet import GeneSegUNet

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CPU_PASS_PIXELS = 2 * 256 * 256
"""Pixels per forward pass on a CPU when :attr:`gsn.settings.max_batch` is ``None``: two 256 px tiles.

On the 2-core development machine passes of 2 or 4 tiles of 256 px ran bf16 about 10 % faster than
8 (fp32: up to 30 %); the activations of larger passes no longer fit in the caches (docs/model.md,
"CPU speed").
"""

# A scale this much smaller than the largest of its batch norm is not moved through the ReLU: dividing
# the shift by it would make a bias that low-precision arithmetic cannot carry.
_MIN_RELATIVE_SCALE = 1e-3


# ----------------------------------------------------------------------------------------------- choices
def cpu_count() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup (container) CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" (no quota) or "<quota> <period>"
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_threads() -> int:
    """Torch threads for inference when neither the call nor :attr:`gsn.settings.threads` says.

    The CPUs this process may use (:func:`cpu_count`), but never more than torch's current setting,
    which already honours ``OMP_NUM_THREADS`` (dask workers set it to 1), a caller's
    :func:`torch.set_num_threads` and the physical core count. On an idle 2-core machine two threads
    ran the network 1.7-1.9x faster than one (docs/model.md, "CPU speed"); on a machine busy with
    other work threads wait for each other, which the runner notices by timing (:class:`_ThreadChooser`).
    """
    return max(1, min(cpu_count(), torch.get_num_threads()))


def _cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        native = any(bool(getattr(cpu, c)()) for c in checks if hasattr(cpu, c))
        return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into the fastest precision that stays within the tested tolerance of fp32.

    CPU: ``"bf16"`` where the CPU computes bf16 natively (about 2x faster; see docs/model.md), else
    ``"fp32"``. CUDA: ``"fp16"`` (10 mantissa bits against bf16's 7; the default model's activations
    stayed below 25 in magnitude on a real crop, far from fp16's limit of 65504). Other devices:
    ``"fp32"``.
    """
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bf16" if _cpu_has_native_bf16() else "fp32"
    if device.type == "cuda":
        return "fp16"
    return "fp32"


def _onednn_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


# ----------------------------------------------------------------------------------------------- folding
def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as ``x * scale + shift`` per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale.detach().clone(), (bn.bias - bn.running_mean * scale).detach().clone()


def _movable(scale: torch.Tensor) -> bool:
    """Whether a batch-norm scale can move through a ReLU into the next convolution (all clearly positive)."""
    return bool((scale > _MIN_RELATIVE_SCALE * scale.abs().max()).all())


@dataclass
class _Conv:
    """A folded convolution: weight, optional bias, zero padding."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    padding: int


@dataclass
class _Block:
    """One residual block after folding; see :func:`_fold_block` for what each field computes."""

    pre: tuple[torch.Tensor, torch.Tensor]  # bn1 as (scale, shift), then ReLU
    conv1: _Conv  # bn2 folded in (no skip) or its shift divided by its scale (skip, movable scale)
    mid: tuple[torch.Tensor, torch.Tensor] | None  # bn2 kept: after the skip addition, then ReLU
    conv2: _Conv
    proj: _Conv | None
    with_skip: bool
    relu_out: bool  # ReLU after the residual sum (the head's batch norm folded in)


@dataclass
class _Folded:
    """The whole network after folding, as plain fp32 tensors."""

    stem: _Conv
    encoder: list[list[_Block]]
    decoder: list[list[_Block]]
    head_pre: tuple[torch.Tensor, torch.Tensor] | None  # head batch norm kept (then ReLU)
    head: _Conv  # 1x1, 4 outputs: mask logit, centre logit, dy, dx (pixels)
    multiple: int


def _fold_block(block, *, head: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[_Block, bool]:
    """Fold one pre-activation block; with ``head`` (scale, shift) also the head batch norm after it.

    Returns the folded block and whether ``head`` was folded in (then the head convolution's input
    channels must be multiplied by the head scale).
    """
    s1, t1 = _bn_affine(block.bn1)
    s2, t2 = _bn_affine(block.bn2)
    w1 = block.conv1.weight.detach().clone()
    w2 = block.conv2.weight.detach().clone()
    mid = None
    if not block.with_skip:
        # conv1 -> bn2 is a plain conv -> affine: fold it into conv1's weights and bias.
        conv1 = _Conv(w1 * s2.view(-1, 1, 1, 1), t2, 1)
    elif _movable(s2):
        # bn2(conv1 + skip) = s2 * (conv1 + t2 / s2 + skip); relu(s2 * y) = s2 * relu(y) for s2 > 0,
        # so the scale moves into conv2's input channels and the skip needs no scaling.
        conv1 = _Conv(w1, t2 / s2, 1)
        w2 = w2 * s2.view(1, -1, 1, 1)
    else:
        conv1 = _Conv(w1, None, 1)
        mid = (s2, t2)
    bias2, folded_head = None, False
    if head is not None and _movable(head[0]):
        bias2, folded_head = head[1] / head[0], True  # same move as above, for the head batch norm
    proj = None if block.proj is None else _Conv(block.proj.weight.detach().clone(), None, 0)
    folded = _Block((s1, t1), conv1, mid, _Conv(w2, bias2, 1), proj, block.with_skip, folded_head)
    return folded, folded_head


@torch.no_grad()
def fold_network(net: GeneSegUNet) -> _Folded:
    """Fold an eval-mode :class:`GeneSegUNet` into fp32 tensors on the CPU (the network is not changed)."""
    net = copy.deepcopy(net).float().cpu().eval()
    encoder = [[_fold_block(b)[0] for b in scale] for scale in net.encoder]
    head_affine = _bn_affine(net.head_bn)
    decoder = []
    for j, (b1, b2) in enumerate(net.decoder):
        last = j == len(net.decoder) - 1
        second, folded_head = _fold_block(b2, head=head_affine if last else None)
        decoder.append([_fold_block(b1)[0], second])
    weight = torch.cat([net.head_mask.weight, net.head_center.weight, net.head_offset.weight * net.offset_scale])
    bias = torch.cat([net.head_mask.bias, net.head_center.bias, net.head_offset.bias * net.offset_scale])
    if folded_head:
        weight = weight * head_affine[0].view(1, -1, 1, 1)
    return _Folded(
        stem=_Conv(net.stem.weight.detach().clone(), None, 1),
        encoder=encoder,
        decoder=decoder,
        head_pre=None if folded_head else head_affine,
        head=_Conv(weight.detach().clone(), bias.detach().clone(), 0),
        multiple=net.multiple,
    )


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    # Zero padding, as GeneSegUNet.forward does.
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


# ----------------------------------------------------------------------------------------------- oneDNN
class _OneDNNNet:
    """CPU forward pass in which every convolution is one fused oneDNN primitive.

    Uses ``torch.ops.mkldnn._convolution_pointwise`` (the kernels torch.compile's CPU backend emits
    for convolution + bias + ReLU / + addition); tensors stay channels-last in ``dtype``.
    """

    def __init__(self, folded: _Folded, dtype: torch.dtype):
        self.dtype = dtype
        self.multiple = folded.multiple
        self.stem = self._conv(folded.stem)
        self.encoder = [[self._block(b) for b in scale] for scale in folded.encoder]
        self.decoder = [[self._block(b) for b in scale] for scale in folded.decoder]
        self.head_pre = None if folded.head_pre is None else self._affine(folded.head_pre)
        # The 1x1 heads run in fp32: bf16 would round offsets of ~20 px to ~0.1 px.
        self.head = self._conv(folded.head, torch.float32)

    def _conv(self, c: _Conv, dtype: torch.dtype | None = None) -> tuple:
        dtype = dtype or self.dtype
        w = c.weight.to(dtype).contiguous(memory_format=torch.channels_last)
        b = None if c.bias is None else c.bias.to(dtype)
        return w, b, [c.padding, c.padding], 1

    def _affine(self, affine: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        # x * scale + shift as a depthwise 1x1 convolution, so the ReLU after it is a fused post-op.
        scale, shift = affine
        w = scale.view(-1, 1, 1, 1).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return w, shift.to(self.dtype), [0, 0], scale.numel()

    def _block(self, b: _Block) -> dict:
        return {
            "pre": self._affine(b.pre),
            "conv1": self._conv(b.conv1),
            "mid": None if b.mid is None else self._affine(b.mid),
            "conv2": self._conv(b.conv2),
            "proj": None if b.proj is None else self._conv(b.proj),
            "relu_out": b.relu_out,
        }

    @staticmethod
    def _run(x: torch.Tensor, conv: tuple, unary: str = "none") -> torch.Tensor:
        w, b, pad, groups = conv
        return torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, [1, 1], [1, 1], groups, unary, [], "")

    @staticmethod
    def _run_add(x: torch.Tensor, other: torch.Tensor, conv: tuple, unary: str | None, *, inplace: bool):
        """``unary(conv(x) + other)``; ``inplace`` writes into ``other`` (oneDNN's sum post-op, no new buffer)."""
        w, b, pad, groups = conv
        if inplace:
            op = torch.ops.mkldnn._convolution_pointwise_.binary
            return op(other, x, w, b, pad, [1, 1], [1, 1], groups, "add", 1.0, unary, [], "")
        op = torch.ops.mkldnn._convolution_pointwise.binary
        return op(x, other, w, b, pad, [1, 1], [1, 1], groups, "add", 1.0, unary, [], "")

    def _block_forward(self, blk: dict, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        r = self._run(x, blk["pre"], "relu")
        if skip is None:
            a = self._run(r, blk["conv1"], "relu")
        elif blk["mid"] is None:
            a = self._run_add(r, skip, blk["conv1"], "relu", inplace=False)  # skip is still needed: not in place
        else:
            a = self._run(self._run_add(r, skip, blk["conv1"], None, inplace=False), blk["mid"], "relu")
        # A block's input is never used after the block (skips are block outputs), so the residual sum
        # may overwrite it.
        shortcut = x if blk["proj"] is None else self._run(x, blk["proj"])
        return self._run_add(a, shortcut, blk["conv2"], "relu" if blk["relu_out"] else None, inplace=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = _pad_to(x.to(dtype=self.dtype, memory_format=torch.channels_last), self.multiple)
        z = self._run(x, self.stem)
        skips = []
        for i, (b1, b2) in enumerate(self.encoder):
            if i > 0:
                z = F.max_pool2d(z, 2)
            z = self._block_forward(b2, self._block_forward(b1, z, None), None)
            skips.append(z)
        for j, (b1, b2) in enumerate(self.decoder):
            skip = skips[-2 - j]
            z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = self._block_forward(b2, self._block_forward(b1, z, skip), None)
        if self.head_pre is not None:
            z = self._run(z, self.head_pre, "relu")
        out = self._run(z.float(), self.head)
        return out[..., :h, :w]


# ----------------------------------------------------------------------------------------------- generic
class _FoldedUNet(nn.Module):
    """The folded network as a plain module: for CUDA, MPS, CPUs without oneDNN, and ``torch.compile``."""

    def __init__(self, folded: _Folded, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.multiple = folded.multiple
        self.dtype = dtype
        self._n = 0
        self.stem = self._conv(folded.stem)
        self.encoder_blocks = [[self._block(b) for b in scale] for scale in folded.encoder]
        self.decoder_blocks = [[self._block(b) for b in scale] for scale in folded.decoder]
        self.head_pre = None if folded.head_pre is None else self._affine(folded.head_pre)
        # The 1x1 heads run in fp32: bf16 would round offsets of ~20 px to ~0.1 px.
        self.head = self._conv(folded.head, torch.float32)

    def _register(self, t: torch.Tensor | None, dtype: torch.dtype | None = None) -> str | None:
        if t is None:
            return None
        name = f"p{self._n}"
        self._n += 1
        self.register_buffer(name, t.to(dtype or self.dtype).clone())
        return name

    def _conv(self, c: _Conv, dtype: torch.dtype | None = None) -> tuple:
        return self._register(c.weight, dtype), self._register(c.bias, dtype), c.padding

    def _affine(self, affine) -> tuple:
        return self._register(affine[0].view(1, -1, 1, 1)), self._register(affine[1].view(1, -1, 1, 1))

    def _block(self, b: _Block) -> dict:
        return {
            "pre": self._affine(b.pre),
            "conv1": self._conv(b.conv1),
            "mid": None if b.mid is None else self._affine(b.mid),
            "conv2": self._conv(b.conv2),
            "proj": None if b.proj is None else self._conv(b.proj),
            "relu_out": b.relu_out,
        }

    def _c(self, x: torch.Tensor, conv: tuple) -> torch.Tensor:
        w, b, pad = conv
        return F.conv2d(x, getattr(self, w), None if b is None else getattr(self, b), padding=pad)

    def _a(self, x: torch.Tensor, affine: tuple) -> torch.Tensor:
        return torch.relu(torch.addcmul(getattr(self, affine[1]), x, getattr(self, affine[0])))

    def _block_forward(self, blk: dict, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        a = self._c(self._a(x, blk["pre"]), blk["conv1"])
        if skip is not None:
            a = a + skip
        a = torch.relu(a) if blk["mid"] is None else self._a(a, blk["mid"])
        out = self._c(a, blk["conv2"]) + (x if blk["proj"] is None else self._c(x, blk["proj"]))
        return torch.relu(out) if blk["relu_out"] else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the maps ``(B, 4, H, W)``: mask logit, centre logit, dy, dx (pixels)."""
        h, w = x.shape[-2:]
        z = self._c(_pad_to(x.to(self.dtype), self.multiple), self.stem)
        skips = []
        for i, (b1, b2) in enumerate(self.encoder_blocks):
            if i > 0:
                z = F.max_pool2d(z, 2)
            z = self._block_forward(b2, self._block_forward(b1, z, None), None)
            skips.append(z)
        for j, (b1, b2) in enumerate(self.decoder_blocks):
            skip = skips[-2 - j]
            z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = self._block_forward(b2, self._block_forward(b1, z, skip), None)
        if self.head_pre is not None:
            z = self._a(z, self.head_pre)
        return self._c(z.float(), self.head)[..., :h, :w]


# ----------------------------------------------------------------------------------------------- threads
class _ThreadChooser:
    """Choose between ``many`` torch threads and one by timing the runner's own calls.

    On an idle 2-core machine two threads ran the network 1.7-1.9x faster than one; with other jobs
    busy on the same cores, two threads that wait for each other at every operation were up to 10x
    slower than one (docs/model.md, "CPU speed"). Neither choice is safe in advance, so the runner
    measures: its first calls alternate the two counts (until one is clearly faster, at most three
    calls each), then the faster by the median seconds per megapixel of its last three calls is used.
    Runners of one process with the same arithmetic share a chooser (calibration is paid once).
    The other count is tried again now and then, so a change of load is noticed: after 8 calls, then
    twice as many each time it loses, and never so often that the tries cost more than about 10 %.
    """

    def __init__(self, many: int, *, first_probe: int = 8, max_probe: int = 512):
        self.options = (many, 1)
        self.times: dict[int, deque] = {n: deque(maxlen=3) for n in self.options}
        self.current = many
        self.calls = 0
        self.first_probe, self.max_probe = first_probe, max_probe
        self.interval = first_probe
        self.next_probe: int | None = None  # set when calibration ends

    def score(self, n: int) -> float:
        """Median seconds per megapixel of the last calls with ``n`` threads."""
        return float(np.median(self.times[n])) if self.times[n] else math.inf

    def _other(self) -> int:
        return self.options[1] if self.current == self.options[0] else self.options[0]

    def pick(self) -> int:
        """Thread count for the next call."""
        if self.next_probe is None:
            return self.options[self.calls % 2]
        return self._other() if self.calls >= self.next_probe else self.current

    def _schedule(self, grow: bool) -> None:
        ratio = self.score(self._other()) / self.score(self.current)
        # A try of a count r times slower costs (r - 1) calls: space tries 10 (r - 1) calls apart at least.
        spacing = 10 * (ratio - 1) if math.isfinite(ratio) else self.max_probe
        interval = 2 * self.interval if grow else self.first_probe
        self.interval = int(min(max(interval, spacing), self.max_probe))
        self.next_probe = self.calls + self.interval

    def record(self, threads: int, seconds_per_mpx: float) -> None:
        """Note how long a call with ``threads`` threads took."""
        self.calls += 1
        self.times[threads].append(seconds_per_mpx)
        if self.next_probe is None:
            if self.calls % 2:
                return
            a, b = (self.score(n) for n in self.options)
            if max(a, b) > 1.5 * min(a, b) or all(len(t) == t.maxlen for t in self.times.values()):
                self.current = min(self.options, key=self.score)
                self.interval = self.first_probe
                self._schedule(grow=False)
            return
        if threads == self.current:
            return
        # A try of the other count: switch only for a clear gain, else look again later.
        if self.score(threads) < 0.9 * self.score(self.current):
            self.current = threads
            self._schedule(grow=False)
        else:
            self._schedule(grow=True)


_CHOOSERS: dict[tuple, _ThreadChooser] = {}
"""One thread chooser per (thread count, precision, backend) in this process."""


# ----------------------------------------------------------------------------------------------- runner
class TileRunner:
    """Runs a :class:`GeneSegUNet` over batches of tiles as fast as the device allows.

    The network is folded and prepared once (see the module docstring); the caller's ``net`` is not
    changed, and later changes to it do not reach the runner (it keeps a copy of the weights).

    Parameters
    ----------
    net
        The network (any device, training or eval mode: batch norm uses its running statistics).
    device
        Torch device; ``"auto"`` (or ``None``) as :func:`gsn.models.resolve_device`.
    precision
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``; ``None`` takes :attr:`gsn.settings.precision`.
        ``"auto"``: bf16 on a CPU with native bf16 (AVX512-BF16 or AMX), fp16 on CUDA, else fp32. The
        bf16 maps stay within the tolerance stated in docs/model.md ("CPU speed") of fp32.
    compile
        Run the folded network through :func:`torch.compile`; ``None`` takes
        :attr:`gsn.settings.compile`. The compilation is done on the first batch and took minutes on a
        2-core CPU: it only pays on images of many thousands of tiles.
    threads
        Torch threads while the runner is open (CPU only); ``None`` takes :attr:`gsn.settings.threads`,
        and if that is ``None`` too, the runner times its own calls and uses :func:`default_threads`
        or one thread, whichever is faster at the time (see :class:`_ThreadChooser`). :meth:`close`
        (or leaving the ``with`` block) restores the count torch had before.
    max_batch
        Tiles per forward pass; a larger batch is split (see :meth:`batch_for`). ``None`` takes
        :attr:`gsn.settings.max_batch`, then the measured default.

    Attributes
    ----------
    device, precision, threads, max_batch, compile
        What was chosen (``threads``: the count in use now); :meth:`describe` returns them all.
    backend
        ``"onednn"`` (fused CPU primitives), ``"folded module"`` (CUDA, MPS, no oneDNN), ``"compiled"``
        or ``"module"`` (a network that is not a :class:`GeneSegUNet`, run as it is).

    Examples
    --------
    >>> with TileRunner(model.net, "cpu") as run:  # doctest: +SKIP
    ...     maps = run(tiles)  # (B, 4, T, T): sigmoid(M), sigmoid(C), dy, dx

    Notes
    -----
    Pickling keeps the weights and the requested options, not the prepared copy: an unpickled runner
    (e.g. on a dask worker) resolves ``"auto"`` options for its own machine and prepares itself when
    it arrives.
    """

    def __init__(
        self,
        net: nn.Module,
        device: str | torch.device | None = "auto",
        *,
        precision: str | None = None,
        compile: bool | None = None,
        threads: int | None = None,
        max_batch: int | None = None,
    ):
        from .._settings import settings

        if not isinstance(net, nn.Module) or not hasattr(net, "in_channels"):
            raise TypeError(f"`net` must be a GeneSegUNet, got {type(net).__name__}.")
        if compile is not None and not isinstance(compile, bool):
            raise TypeError(f"`compile` must be True, False or None (from gsn.settings), got {compile!r}.")
        self._requested = {
            "device": device if isinstance(device, str) or device is None else str(device),
            "precision": check_precision(precision) if precision is not None else None,
            "compile": compile,
            "threads": check_count(threads, "threads"),
            "max_batch": check_count(max_batch, "max_batch"),
        }
        # What is needed to rebuild the network anywhere: its CPU weights (a GeneSegUNet) or a CPU copy
        # of another module with the same outputs (e.g. a test stand-in).
        if isinstance(net, GeneSegUNet):
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            self._spec = ("unet", net.in_channels, tuple(net.widths), net.offset_scale, state)
        else:
            self._spec = ("module", copy.deepcopy(net).cpu())
        self.in_channels = int(net.in_channels)
        self._settings = (settings.precision, settings.compile, settings.threads, settings.max_batch)
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._saved_threads: int | None = None
        self._prepare(net)

    # ------------------------------------------------------------------ preparation
    def _prepare(self, net: nn.Module | None = None) -> None:
        """Resolve the options and build the inference copy (once; again after unpickling)."""
        req = self._requested
        s_precision, s_compile, s_threads, s_max_batch = self._settings
        self.max_batch = req["max_batch"] or s_max_batch
        self.device = resolve_device(req["device"])
        precision = req["precision"] or s_precision
        if self._spec[0] == "module" and precision == "auto":
            precision = "fp32"  # the bf16 tolerance was measured on GeneSegUNet only
        self.precision = resolve_precision(precision, self.device)
        self.compile = bool(s_compile if req["compile"] is None else req["compile"])
        fixed = req["threads"] or s_threads
        self._chooser = None
        if self.device.type != "cpu":
            self.threads = fixed or torch.get_num_threads()  # not used by the network
        elif fixed:
            self.threads = fixed
        else:
            self.threads = default_threads()
        if self.device.type == "cpu" and self.precision == "bf16" and not _cpu_has_native_bf16():
            logger.warning("bf16 on a CPU without native bf16 instructions is emulated and slower than fp32.")
        self._set_threads()
        dtype = _DTYPES[self.precision]
        if self._spec[0] == "module":
            self.backend = "module"
            self._forward = self._plain_forward(self._spec[1], dtype)
            self._choose_threads_by_timing(fixed)
            return
        if net is None:
            _, in_channels, widths, offset_scale, state = self._spec
            net = GeneSegUNet(in_channels, widths, offset_scale=offset_scale)
            net.load_state_dict(state)
        folded = fold_network(net)
        self.backend = "folded module"
        fused = self.device.type == "cpu" and not self.compile and self.precision in ("fp32", "bf16")
        if fused and _onednn_available():
            try:
                onednn = _OneDNNNet(folded, dtype)
                with torch.inference_mode():  # fails early (e.g. an old torch without these ops)
                    onednn(torch.zeros(1, net.in_channels, folded.multiple, folded.multiple))
                self._forward, self.backend = onednn, "onednn"
            except (RuntimeError, AttributeError, TypeError) as e:
                logger.debug("Fused oneDNN path unavailable (%s: %s); using the folded module.", type(e).__name__, e)
        if self._forward is None:
            self._forward = self._module_forward(folded, dtype)
        self._choose_threads_by_timing(fixed)
        logger.debug("TileRunner: %s", self.describe())

    def _choose_threads_by_timing(self, fixed: int | None) -> None:
        if self.device.type == "cpu" and not fixed and self.threads > 1:
            # Shared by the runners of this process with the same arithmetic, so that calibration is paid once.
            key = (self.threads, self.precision, self.backend)
            self._chooser = _CHOOSERS.setdefault(key, _ThreadChooser(self.threads))
            self.threads = self._chooser.current

    def _module_forward(self, folded: _Folded, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        # The body's weights are cast to `dtype` once (what autocast would do on every call).
        module = _FoldedUNet(folded, dtype).eval()
        memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        module = module.to(self.device, memory_format=memory_format)
        if self.compile:
            # Freezing lets the CPU backend fold weights and fuse convolutions with their epilogues.
            module = torch.compile(module, dynamic=False, options={"freezing": True})
            self.backend = "compiled"

        def forward(x: torch.Tensor) -> torch.Tensor:
            return module(x.to(memory_format=memory_format))

        return forward

    def _plain_forward(self, net: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        """Any module returning :class:`UNetOutput`, unfolded, under autocast for fp16/bf16."""
        memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        module = copy.deepcopy(net).eval().to(self.device, memory_format=memory_format)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = module(x.to(memory_format=memory_format))
            return torch.cat([out.mask_logits, out.center_logits, out.offsets], 1)

        return forward

    def _set_threads(self, n: int | None = None) -> None:
        """Set torch's thread count to ``n`` (default: :attr:`threads`), remembering the count to restore."""
        if self.device.type != "cpu":
            return
        if self._saved_threads is None:
            self._saved_threads = torch.get_num_threads()
        n = n or self.threads
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    # ------------------------------------------------------------------ use
    def __call__(self, tiles) -> torch.Tensor:
        """Predict the maps of a batch of tiles.

        Parameters
        ----------
        tiles
            ``(B, C, T, T)`` float array or tensor (inputs in [0, 1], as :func:`gsn.models.predict_maps`).

        Returns
        -------
        float32 tensor ``(B, 4, T, T)`` on :attr:`device`: ``sigmoid(M)``, ``sigmoid(C)``, ``dy``, ``dx``.
        """
        if self._forward is None:
            self._prepare()
        x = torch.as_tensor(tiles)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Expected tiles of shape (B, {self.in_channels}, T, T), got {tuple(x.shape)}.")
        threads = self._chooser.pick() if self._chooser is not None else self.threads
        self._set_threads(threads)
        t0 = time.perf_counter()
        step = self.batch_for(x.shape[-2] * x.shape[-1])
        with torch.inference_mode():
            x = x.to(self.device, dtype=torch.float32, non_blocking=True)
            out = torch.cat([self._forward(x[i : i + step]).float() for i in range(0, len(x), step)]).contiguous()
            out[:, :2].sigmoid_()
        if self._chooser is not None:
            self._chooser.record(threads, (time.perf_counter() - t0) / (x.numel() / x.shape[1] / 1e6))
            self.threads = self._chooser.current
        return out

    def batch_for(self, tile_pixels: int) -> int:
        """Tiles per forward pass for tiles of ``tile_pixels`` pixels; a larger batch is split into passes of this many.

        :attr:`max_batch` if set, else on a CPU as many tiles as hold about :data:`CPU_PASS_PIXELS`
        pixels (two 256 px tiles), and no limit on other devices.
        """
        if self.max_batch is not None:
            return self.max_batch
        if self.device.type == "cpu":
            return max(1, round(CPU_PASS_PIXELS / tile_pixels))
        return 1 << 30

    def describe(self) -> dict[str, Any]:
        """Return what the runner chose, as plain values (for logs and ``uns``)."""
        return {
            "device": str(self.device),
            "precision": self.precision,
            "backend": self.backend,
            "compile": self.compile,
            "threads": self.threads,
            "max_batch": self.max_batch,
            # Thread count chosen by timing (see _ThreadChooser), with the median seconds per megapixel.
            "threads_measured": None
            if self._chooser is None
            else {n: round(self._chooser.score(n), 4) for n in self._chooser.options if self._chooser.times[n]},
        }

    def close(self) -> None:
        """Restore the torch thread count the runner changed (the runner stays usable and sets it again)."""
        if self._saved_threads is not None:
            if torch.get_num_threads() != self._saved_threads:
                torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def __enter__(self) -> TileRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"_requested": self._requested, "_spec": self._spec, "in_channels": self.in_channels,
                "_settings": self._settings}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._forward = None
        self._saved_threads = None
        self._chooser = None
        # Prepared on arrival: a scattered runner is unpickled once per worker, then used by many blocks.
        self._prepare()

    def __repr__(self) -> str:
        d = self.describe() if getattr(self, "_forward", None) is not None else {"prepared": False}
        return f"TileRunner({', '.join(f'{k}={v}' for k, v in d.items())})"
