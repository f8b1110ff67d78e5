"""DHC's formulas (github.com/xmed-lab/DHC, code/utils/loss.py and the training scripts), written
out once for the tests that compare our losses and methods against them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, D, H, W) ids -> (B, C, D, H, W) float one-hot, as DHC's ``scatter_`` builds it."""
    return F.one_hot(labels, num_classes).permute(0, 4, 1, 2, 3).float()


def dhc_soft_dice(x: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    """``SoftDiceLoss`` with ``batch_dice`` on probabilities ``x`` and a same-shaped ``y`` (soft
    or one-hot): per class ``(2tp + s) / (2tp + fp + fn + s + 1e-8)``."""
    axes = [0, 2, 3, 4]
    tp = (x * y).sum(axes)
    fp = (x * (1 - y)).sum(axes)
    fn = ((1 - x) * y).sum(axes)
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth + 1e-8)


def dhc_dc_and_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``DC_and_CE_loss(w_dc=w, w_ce=w)``: (weighted) CE + ``-mean_{c>=1} w_c dice_c``, smooth 1."""
    ce = F.cross_entropy(logits, labels, weight=weight)
    dice = dhc_soft_dice(logits.softmax(1), one_hot(labels, logits.shape[1]), smooth=1.0)[1:]
    if weight is not None:
        dice = dice * weight[1:]
    return ce - dice.mean()


def dhc_weighted_ce(
    logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``WeightedCrossEntropyLoss(weight)``: per-voxel (class-weighted) CE times the map, plain mean."""
    loss = F.cross_entropy(logits, target, weight=weight, reduction="none").view(logits.shape[0], -1)
    return torch.mean(loss * weight_map.view(logits.shape[0], -1))


def dhc_sigmoid_rampup(current: float, length: float) -> float:
    """``sigmoid_rampup`` of every training script: ``exp(-5 (1 - clip(t, 0, T)/T)^2)``."""
    phase = 1.0 - np.clip(current, 0.0, length) / length
    return float(np.exp(-5.0 * phase * phase))
