"""DHC's class weightings, shared by DHC, its halves and MICD.

DistDW (distribution-aware) favours rare classes from voxel counts; DiffDW
(difficulty-aware) favours classes whose Dice is low or learnt slowly. Both keep their state
in buffers, so they are saved and restored with the method's ``state_dict``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.losses import class_voxel_counts, hard_labels

EPS = 1e-8


class ClassWeighting(nn.Module):
    """Uniform weights: every class weighs 1. Subclasses update ``weights`` each iteration."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("weights", torch.ones(num_classes))

    def initialise(self, labelled_counts: Tensor) -> None:
        """Called once before training with the voxel count per class of the labelled set."""

    def update(self, logits_labelled: Tensor, labels: Tensor, logits_unlabelled: Tensor) -> Tensor:
        """Update from this iteration's predictions; return the weights to use now."""
        return self.weights


class DistDW(ClassWeighting):
    """Distribution-aware weights: ``w_c = C log(P_c) / max_k log(P_k)``, ``P_c = (max N + eps)/(N_c + eps)``.

    Initialised from the labelled ground truth, then blended (momentum 0.99) with the same
    formula on the branch's argmax over the unlabelled half. The most frequent class gets 0.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99) -> None:
        super().__init__(num_classes)
        self.momentum = momentum

    def weights_from_counts(self, counts: Tensor) -> Tensor:
        ratio = (counts.max() + EPS) / (counts + EPS)
        log_ratio = torch.log(ratio)
        return (self.num_classes * log_ratio / log_ratio.max().clamp_min(EPS)).float()

    def initialise(self, labelled_counts: Tensor) -> None:
        self.weights.copy_(self.weights_from_counts(labelled_counts.to(self.weights.device)))

    def update(self, logits_labelled: Tensor, labels: Tensor, logits_unlabelled: Tensor) -> Tensor:
        if logits_unlabelled.shape[0] > 0:
            counts = class_voxel_counts(hard_labels(logits_unlabelled), self.num_classes)
            fresh = self.weights_from_counts(counts.to(self.weights.device))
            self.weights.mul_(self.momentum).add_((1 - self.momentum) * fresh)
        return self.weights


class DiffDW(ClassWeighting):
    """Difficulty-aware weights from the per-class hard Dice ``d_t`` on the labelled half.

    ``learn``/``unlearn`` are the EMA (momentum 49/50) of ``delta * log(d_t / d_{t-1})`` for
    rising/falling Dice, ``diff = ((unlearn + eps)/(learn + eps))^(1/5)``, ``beta = EMA(1 - d_t)``
    and ``w = C * diff * beta / max(diff * beta)``. Initial weights are all C.

    As DHC's ``DiffDW.cal_weights``: ``d_t`` is its soft Dice at smooth 1e-8 on the one-hot
    argmax, over the whole labelled batch and including background, so a class absent from
    both prediction and labels scores 0.5; ``d_0`` is 1e-8, so the first iteration already
    updates the weights.
    """

    def __init__(self, num_classes: int, momentum: float = 49 / 50) -> None:
        super().__init__(num_classes)
        self.momentum = momentum
        self.weights.fill_(num_classes)
        self.register_buffer("last_dice", torch.full((num_classes,), EPS))
        self.register_buffer("learn", torch.zeros(num_classes))
        self.register_buffer("unlearn", torch.zeros(num_classes))
        self.register_buffer("beta", torch.ones(num_classes))

    def hard_dice(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``(2 tp + eps) / (2 tp + fp + fn + eps + eps)`` per class of the argmax against the labels."""
        pred = hard_labels(logits).reshape(-1)
        truth = labels.reshape(-1)
        n = self.num_classes
        tp = torch.bincount(truth[pred == truth], minlength=n).double()
        total = (torch.bincount(pred, minlength=n) + torch.bincount(truth, minlength=n)).double()
        return ((2 * tp + EPS) / (total + EPS + EPS)).float()

    def update(self, logits_labelled: Tensor, labels: Tensor, logits_unlabelled: Tensor) -> Tensor:
        dice = self.hard_dice(logits_labelled, labels).to(self.weights.device)
        delta = dice - self.last_dice
        change = delta * torch.log(dice / self.last_dice)
        m = self.momentum
        self.learn.mul_(m).add_((1 - m) * torch.where(delta > 0, change, torch.zeros_like(change)))
        self.unlearn.mul_(m).add_((1 - m) * torch.where(delta <= 0, change, torch.zeros_like(change)))
        self.beta.mul_(m).add_((1 - m) * (1 - dice))
        difficulty = ((self.unlearn + EPS) / (self.learn + EPS)) ** (1 / 5)
        score = difficulty * self.beta
        self.weights.copy_(self.num_classes * score / score.max())
        self.last_dice.copy_(dice)
        return self.weights


class LabelledFrequency(ClassWeighting):
    """Fixed weights from the labelled set's class distribution (CLD's class-distribution-aware
    weighting, reconstructed): ``w_c = (max_k N_k / N_c)^power``, so the most frequent class
    weighs 1 and rarer ones more."""

    def __init__(self, num_classes: int, power: float = 1 / 3) -> None:
        super().__init__(num_classes)
        self.power = power  # reconstruction choice (CLD's ``weight_power``)

    def initialise(self, labelled_counts: Tensor) -> None:
        counts = labelled_counts.to(self.weights.device).double()
        ratio = (counts.max() + EPS) / (counts + EPS)
        self.weights.copy_((ratio**self.power).float())


WEIGHTINGS: dict[str, type[ClassWeighting]] = {
    "uniform": ClassWeighting,
    "distdw": DistDW,
    "diffdw": DiffDW,
    "labelled_frequency": LabelledFrequency,
}


def make_weighting(name: str, num_classes: int) -> ClassWeighting:
    try:
        return WEIGHTINGS[name](num_classes)
    except KeyError:
        raise SettingsError(f"unknown class weighting {name!r}; expected one of {sorted(WEIGHTINGS)}") from None
