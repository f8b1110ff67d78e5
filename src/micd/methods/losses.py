"""Loss terms shared by the methods: class-weighted cross-entropy and soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Cross-entropy averaged over voxels, each voxel weighted by its target class's weight."""
    return F.cross_entropy(
        logits.float(), target, weight=None if weight is None else weight.float()
    )


def weighted_soft_dice(
    logits: Tensor, target: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Soft Dice loss over the foreground classes, each class's loss multiplied by its weight.

    ``sum_{c>=1} w_c * (1 - dice_c) / (C - 1)``, Dice computed over the whole batch.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    one_hot = F.one_hot(target, num_classes).movedim(-1, 1).float()
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
    per_class = 1 - dice[1:]
    if weight is not None:
        per_class = per_class * weight[1:].float()
    return per_class.sum() / (num_classes - 1)


def dice_ce(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """The supervised loss of DHC's protocol: weighted CE plus weighted soft Dice."""
    return weighted_cross_entropy(logits, target, weight) + weighted_soft_dice(
        logits, target, weight
    )


def hard_labels(logits: Tensor) -> Tensor:
    """Detached argmax pseudo-labels (no confidence threshold, as in DHC)."""
    return logits.detach().argmax(dim=1)


def class_voxel_counts(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels.reshape(-1), minlength=num_classes).double()
