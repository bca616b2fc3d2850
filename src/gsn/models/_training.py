"""The training loop (paper Eq. 2 and "Training Details"): arrays in, trained model out.

Nothing here knows about SpatialData; :func:`gsn.tl.train` prepares the arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .._logging import logger
from ._loss import genesegnet_loss
from ._model import GeneSegNetModel, resolve_device
from ._targets import make_targets


@dataclass
class TrainingSample:
    """One training image.

    Attributes
    ----------
    inputs
        Network inputs ``(C, H, W)``, float32 in [0, 1]: the normalised image channels, then the
        RNA location map.
    labels
        Instance labels ``(H, W)`` (int, 0 = background) on the same pixel grid.
    name
        Used in messages.
    transcripts
        ``(x, y, genes)`` of the transcripts in pixels of this grid (column, row) with integer gene
        codes, for label updates that regrow cells with the RNA (``refine="grow"`` in
        :func:`gsn.models.recursive_train`); ``None`` when not needed.
    pixel_size
        Microns per pixel of this grid (``None``: unknown), for the growth's distances.
    """

    inputs: np.ndarray
    labels: np.ndarray
    name: str = "sample"
    transcripts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    pixel_size: float | None = None

    def __post_init__(self):
        self.inputs = np.asarray(self.inputs, dtype=np.float32)
        self.labels = np.asarray(self.labels)
        if self.inputs.ndim != 3:
            raise ValueError(f"{self.name}: inputs must be (C, H, W), got shape {self.inputs.shape}.")
        if self.labels.shape != self.inputs.shape[1:]:
            raise ValueError(
                f"{self.name}: labels of shape {self.labels.shape} do not match inputs of shape {self.inputs.shape}."
            )
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise TypeError(f"{self.name}: labels must be integers, got {self.labels.dtype}.")


@dataclass
class Augmentation:
    """Random geometric augmentation of training crops (paper: scale jitter, flips, rotation, crops).

    Attributes
    ----------
    scale_range
        Zoom factor drawn uniformly from this range (0.75-1.25 in the paper); ``(1, 1)`` disables it.
    rotate
        Rotate by an angle drawn uniformly from [0, 360) degrees (this includes the 90-degree ones).
    flip
        Mirror the crop with probability 0.5.
    """

    scale_range: tuple[float, float] = (0.75, 1.25)
    rotate: bool = True
    flip: bool = True


def random_crop(
    rng: np.random.Generator,
    sample: TrainingSample,
    crop_size: int,
    augmentation: Augmentation,
    *,
    margin: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one augmented crop of inputs and labels.

    One random similarity transform (zoom, rotation, mirror, position) is applied to the inputs
    (bilinear) and to the *label image* (nearest neighbour); targets are later recomputed from the
    transformed labels, so offsets and centres are exact under any augmentation. (The reference
    code transformed offset targets without rescaling them under scale jitter.) Areas outside the
    image are zero, i.e. background with no signal, as beyond the image border at inference.

    Parameters
    ----------
    rng
        Random generator.
    sample
        The image to crop from.
    crop_size
        Side of the input crop in pixels.
    augmentation
        What to randomise.
    margin
        The label crop extends this many pixels beyond the input crop on every side, so cells cut by
        the crop edge get their true centre (see :func:`train_network`).

    Returns
    -------
    inputs ``(C, crop_size, crop_size)`` float32 and labels ``(crop_size + 2 margin,) * 2``.
    """
    h, w = sample.labels.shape
    lo, hi = augmentation.scale_range
    zoom = rng.uniform(lo, hi) if hi > lo else lo
    theta = rng.uniform(0, 2 * np.pi) if augmentation.rotate else 0.0
    mirror = augmentation.flip and rng.random() < 0.5
    center_src = np.array([rng.uniform(0, h), rng.uniform(0, w)]) - 0.5

    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    flip = np.diag([1.0, -1.0 if mirror else 1.0])
    matrix = rot @ flip / zoom  # output (row, col) step -> input step

    def warp(arr: np.ndarray, size: int, order: int) -> np.ndarray:
        center_out = np.full(2, (size - 1) / 2)
        offset = center_src - matrix @ center_out
        return ndimage.affine_transform(
            arr, matrix, offset=offset, output_shape=(size, size), order=order, mode="constant", cval=0, prefilter=False
        )

    inputs = np.stack([warp(ch, crop_size, 1) for ch in sample.inputs]).astype(np.float32, copy=False)
    labels = warp(sample.labels, crop_size + 2 * margin, 0)
    return inputs, labels


def _lr_factor(step: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up over the first 5 % of steps, then constant or cosine."""
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def train_network(
    model: GeneSegNetModel,
    samples: Sequence[TrainingSample],
    *,
    epochs: int = 20,
    steps_per_epoch: int = 25,
    batch_size: int = 8,
    crop_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    schedule: str = "cosine",
    augmentation: Augmentation | None = None,
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    target_margin: int = 32,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool | None = None,
) -> GeneSegNetModel:
    """Train ``model`` in place on labelled images with AdamW (paper Eq. 2) and return it.

    Each step draws ``batch_size`` random augmented crops (images picked with probability
    proportional to their area), builds the targets of Eqs. 10-12 from the cropped labels and takes
    one AdamW step on the loss of Eq. 15. Training continues from the model's current weights, so
    calling this again fine-tunes (warm start).

    Targets are computed on a label crop ``target_margin`` pixels larger than the input crop on
    every side and then cut to the input crop: a cell cut by the crop edge keeps its true centre
    (possibly outside the crop) and its offsets point there. Neighbouring inference tiles then agree
    on such cells, so averaging overlapping tiles reinforces one centre instead of making two.

    Parameters
    ----------
    model
        The model to train; its config supplies ``center_sigma`` and ``offset_scale``.
    samples
        Training images with their labels.
    epochs, steps_per_epoch
        Length of training; the loss is recorded per epoch in ``model.history``.
    batch_size, crop_size
        Crops per step and their side in pixels (8 and 256 in the paper).
    lr, weight_decay
        AdamW learning rate and decoupled weight decay (1e-3 and 1e-5 in the paper).
    schedule
        ``"cosine"`` (warm-up, then cosine decay to 1 % of ``lr``) or ``"constant"`` (warm-up only).
    augmentation
        Geometric augmentation; the paper's by default.
    loss_weights
        ``(lambda_1, lambda_2, lambda_3)`` of Eq. 15.
    target_margin
        Extra label context around each crop for the targets, in pixels.
    device
        Torch device; ``"auto"`` picks CUDA, then MPS, then CPU.
    seed
        Seed for crop positions and augmentation; with the same seed and initial weights, training on
        CPU is reproducible.
    progress
        Show a progress bar; defaults to ``gsn.settings.progress``.

    Returns
    -------
    The same ``model``, trained, in eval mode, on the CPU.
    """
    from tqdm.auto import tqdm

    from .._settings import settings

    if not samples:
        raise ValueError("No training samples given.")
    if epochs < 1 or steps_per_epoch < 1 or batch_size < 1:
        raise ValueError("`epochs`, `steps_per_epoch` and `batch_size` must be >= 1.")
    if crop_size < 16:
        raise ValueError(f"`crop_size` must be at least 16 px, got {crop_size}.")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"`schedule` must be 'cosine' or 'constant', got {schedule!r}.")
    in_ch = model.config.in_channels
    for s in samples:
        if s.inputs.shape[0] != in_ch:
            raise ValueError(
                f"{s.name}: {s.inputs.shape[0]} input channels, but the model expects {in_ch} "
                f"({model.channels} + RNA map)."
            )
    if not any(s.labels.any() for s in samples):
        raise ValueError("The training labels contain no cells.")
    augmentation = augmentation or Augmentation()
    progress = settings.progress if progress is None else progress

    dev = resolve_device(device)
    # channels-last convolutions are 1.5-2x faster on CPUs (oneDNN); the layout is undone at the end.
    memory_format = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    net = model.net.to(dev, memory_format=memory_format)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    areas = np.array([s.labels.size for s in samples], dtype=np.float64)
    p_sample = areas / areas.sum()
    total = epochs * steps_per_epoch
    cfg = model.config
    w_mask, w_center, w_offset = loss_weights
    m = int(target_margin)
    logger.info(
        "Training GeneSegNet (widths %s) on %d image(s), %d epochs x %d steps, batch %d, crop %d, device %s",
        list(cfg.widths), len(samples), epochs, steps_per_epoch, batch_size, crop_size, dev,
    )  # fmt: skip

    step = 0
    bar = tqdm(total=total, desc="training", disable=not progress, unit="step")
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            sums = np.zeros(4)
            for _ in range(steps_per_epoch):
                xs, ms, cs, vs = [], [], [], []
                for idx in rng.choice(len(samples), size=batch_size, p=p_sample):
                    x, lab = random_crop(rng, samples[idx], crop_size, augmentation, margin=m)
                    t = make_targets(lab, sigma=cfg.center_sigma)
                    inner = (slice(m, m + crop_size), slice(m, m + crop_size))
                    xs.append(x)
                    ms.append(t.mask[inner])
                    cs.append(t.center[inner])
                    vs.append(t.offsets[(slice(None), *inner)])
                x = torch.from_numpy(np.stack(xs)).to(dev).contiguous(memory_format=memory_format)
                mask = torch.from_numpy(np.stack(ms)).to(dev)
                center = torch.from_numpy(np.stack(cs)).to(dev)
                offsets = torch.from_numpy(np.stack(vs)).to(dev)

                for group in opt.param_groups:
                    group["lr"] = lr * _lr_factor(step, total, schedule)
                loss = genesegnet_loss(
                    net(x), mask, center, offsets,
                    mask_weight=w_mask, center_weight=w_center, offset_weight=w_offset, offset_scale=cfg.offset_scale,
                )  # fmt: skip
                if not torch.isfinite(loss.total):
                    raise FloatingPointError(
                        f"The training loss became {loss.total.item()} at step {step}; lower `lr` or check the inputs."
                    )
                opt.zero_grad(set_to_none=True)
                loss.total.backward()
                opt.step()
                sums += [term.item() for term in loss]
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.total.item():.4f}")
            mean = sums / steps_per_epoch
            record = {
                "epoch": len(cfg.history) + 1,
                "loss": float(mean[0]),
                "loss_mask": float(mean[1]),
                "loss_center": float(mean[2]),
                "loss_offset": float(mean[3]),
                "lr": float(opt.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - t0,
            }
            cfg.history.append(record)
            logger.info(
                "epoch %d/%d: loss %.4f (mask %.4f, centre %.4f, offset %.4f), %.1f s",
                epoch + 1, epochs, *mean, record["seconds"],
            )  # fmt: skip
    finally:
        bar.close()
        net.eval()
        model.net = net.to("cpu", memory_format=torch.contiguous_format)
    return model
