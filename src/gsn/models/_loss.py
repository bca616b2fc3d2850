"""Training loss of GeneSegNet (paper Eq. 15)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._unet import DEFAULT_OFFSET_SCALE, UNetOutput


class LossTerms(NamedTuple):
    """The weighted total and its three unweighted terms (scalars)."""

    total: torch.Tensor
    mask: torch.Tensor
    center: torch.Tensor
    offset: torch.Tensor


def genesegnet_loss(
    pred: UNetOutput,
    mask: torch.Tensor,
    center: torch.Tensor,
    offsets: torch.Tensor,
    *,
    mask_weight: float = 1.0,
    center_weight: float = 1.0,
    offset_weight: float = 1.0,
    offset_scale: float = DEFAULT_OFFSET_SCALE,
) -> LossTerms:
    """Eq. 15: ``l1 * BCE(M) + l2 * L2(C) + l3 * L2(V on cell pixels)``.

    - ``BCE(M)``: binary cross-entropy of the confidence logits against the cell mask, averaged over
      pixels (computed from logits for numerical stability).
    - ``L2(C)``: squared error of ``sigmoid(C)`` against the Gaussian centre target, summed over
      pixels and divided by the target's energy ``sum(C**2)`` over the batch (at least 1): predicting
      no centres at all costs exactly 1. A plain per-pixel mean would be about 100 times smaller
      than the other terms, because centre peaks cover a few per cent of a crop, and the centre head
      would barely learn with the paper's unit weights; Panoptic-DeepLab multiplies its centre MSE
      by 200 for the same reason, and this normalisation gives about the same balance while staying
      independent of crop size, cell density and peak width.
    - ``L2(V)``: squared error of the offsets, both divided by ``offset_scale`` pixels (so an error
      of ``offset_scale`` px costs 1), summed over ``(dy, dx)`` and averaged over cell pixels. In
      raw pixels the term would be hundreds of times the others and dominate training.

    Parameters
    ----------
    pred
        Network output for a batch.
    mask, center
        Targets ``(B, 1, H, W)`` (or ``(B, H, W)``), float.
    offsets
        Target offsets in pixels ``(B, 2, H, W)``, order ``(dy, dx)``.
    mask_weight, center_weight, offset_weight
        ``lambda_1, lambda_2, lambda_3`` of Eq. 15 (all 1 in the paper).
    offset_scale
        Pixels per unit of offset error.

    Returns
    -------
    :class:`LossTerms`; ``total`` is the tensor to back-propagate.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    if center.ndim == 3:
        center = center[:, None]
    l_mask = F.binary_cross_entropy_with_logits(pred.mask_logits, mask)

    energy = (center**2).sum().clamp(min=1.0)
    l_center = ((torch.sigmoid(pred.center_logits) - center) ** 2).sum() / energy

    fg = mask  # offsets only count on cell pixels
    n_fg = fg.sum().clamp(min=1)
    sq = (((pred.offsets - offsets) / offset_scale) ** 2).sum(dim=1, keepdim=True)
    l_offset = (sq * fg).sum() / n_fg

    total = mask_weight * l_mask + center_weight * l_center + offset_weight * l_offset
    return LossTerms(total, l_mask.detach(), l_center.detach(), l_offset.detach())
