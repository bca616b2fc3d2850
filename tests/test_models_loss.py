import torch

from gsn.models import UNetOutput, genesegnet_loss, make_targets_batch


def _targets():
    import numpy as np

    lab = np.zeros((2, 32, 32), np.int32)
    lab[0, 4:14, 4:14] = 1
    lab[0, 16:28, 10:20] = 2
    lab[1, 5:25, 5:12] = 5
    t = make_targets_batch(lab)
    return [torch.from_numpy(a) for a in t]


def test_perfect_prediction_has_near_zero_loss_and_errors_cost():
    mask, center, offsets = _targets()
    logit = lambda p: torch.logit(p.clamp(1e-6, 1 - 1e-6))  # noqa: E731
    perfect = UNetOutput(logit(mask)[:, None] * 3, logit(center)[:, None], offsets.clone())
    loss = genesegnet_loss(perfect, mask, center, offsets)
    assert loss.total < 1e-3
    # 10 px of error on every cell pixel's offset costs 1 (offset_scale = 10 px) per axis
    off = UNetOutput(perfect.mask_logits, perfect.center_logits, offsets + 10 * mask[:, None])
    assert abs(genesegnet_loss(off, mask, center, offsets).offset.item() - 2.0) < 1e-4
    # background offsets do not count
    bg = UNetOutput(perfect.mask_logits, perfect.center_logits, offsets + 50 * (1 - mask[:, None]))
    assert genesegnet_loss(bg, mask, center, offsets).offset < 1e-6


def test_weights_scale_the_terms():
    mask, center, offsets = _targets()
    zero = UNetOutput(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), torch.zeros(2, 2, 32, 32))
    base = genesegnet_loss(zero, mask, center, offsets)
    w = genesegnet_loss(zero, mask, center, offsets, mask_weight=2, center_weight=0, offset_weight=0.5)
    torch.testing.assert_close(w.total, 2 * base.mask + 0.5 * base.offset)
    # the centre term is relative to the target's energy: no centres at all costs exactly 1
    none = UNetOutput(zero.mask_logits, torch.full((2, 1, 32, 32), -1e4), zero.offsets)
    torch.testing.assert_close(genesegnet_loss(none, mask, center, offsets).center, torch.tensor(1.0))
