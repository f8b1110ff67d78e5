"""Loss terms shared by the methods: class-weighted cross-entropy and soft Dice, as DHC's
``code/utils/loss.py`` computes them (docs/protocol.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def at_least_single(tensor: Tensor) -> Tensor:
    """Half precision (under autocast) raised to single; single and double kept (``.float()`` would
    also lower double, which the double-precision golden steps must keep)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


DICE_SMOOTH = 1.0
"""Smoothing of the supervised soft Dice: DHC's ``DC_and_CE_loss`` uses ``SoftDiceLoss(smooth=1)``."""


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy averaged over voxels, each voxel weighted by its target class's weight
    (the weighted mean ``sum w_y l / sum w_y`` of ``F.cross_entropy``)."""
    return F.cross_entropy(logits.float(), target, weight=None if weight is None else weight.float())


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-voxel CE (times its target class's weight, if given) times ``mask``, averaged over *all*
    voxels: DHC's ``WeightedCrossEntropyLoss`` with a weight map, not normalised by the weights or
    the mask."""
    per_voxel = F.cross_entropy(
        logits.float(), target, weight=None if weight is None else weight.float(), reduction="none"
    )
    return (per_voxel * mask).mean()


def soft_dice_per_class(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """Soft Dice of every class over the whole batch, DHC's ``SoftDiceLoss`` with ``batch_dice``:
    ``(2 tp + smooth) / (2 tp + fp + fn + smooth + 1e-8)`` on the softmax, ``2 tp + fp + fn`` being
    the sum of the class's probabilities plus its voxel count."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    flat_target = target.reshape(-1)
    # tp summed per class without materialising a one-hot tensor
    probs_of_target = probs.gather(1, target.unsqueeze(1)).reshape(-1)
    tp = torch.zeros(num_classes, device=logits.device).index_add(0, flat_target, probs_of_target)
    total = probs.sum(dim=(0, *range(2, logits.ndim))) + torch.bincount(flat_target, minlength=num_classes)
    return (2 * tp + smooth) / (total + smooth + 1e-8)


def weighted_soft_dice(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, smooth: float = DICE_SMOOTH
) -> Tensor:
    """Soft Dice loss over the foreground classes, each class's term multiplied by its weight:
    ``sum_{c>=1} w_c (1 - dice_c) / (C - 1)``.

    DHC's loss is ``-mean_{c>=1} w_c dice_c``; ours is that plus the constant ``mean_{c>=1} w_c``
    (weights carry no gradient), so the gradients are the same and the logged value stays positive.
    """
    per_class = 1 - soft_dice_per_class(logits, target, smooth)[1:]
    if weight is not None:
        per_class = per_class * weight[1:].float()
    return per_class.mean()


def dice_ce(logits: Tensor, target: Tensor, weight: Tensor | None = None, smooth: float = DICE_SMOOTH) -> Tensor:
    """The supervised loss of DHC's protocol (``DC_and_CE_loss``): weighted CE plus weighted soft Dice."""
    return weighted_cross_entropy(logits, target, weight) + weighted_soft_dice(logits, target, weight, smooth)


def hard_labels(logits: Tensor) -> Tensor:
    """Detached argmax pseudo-labels (no confidence threshold, as in DHC).

    ``max(dim=1).indices`` gives the same first-maximum index as ``argmax`` and is about
    three times faster over the class axis of a (B, C, D, H, W) tensor on the CPU.
    """
    return logits.detach().max(dim=1).indices


def class_voxel_counts(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels.reshape(-1), minlength=num_classes).double()
