"""GA (Qi, Wu & Chan, ECCV 2024: "Gradient-Aware for Class-Imbalanced Semi-supervised Medical Image
Segmentation", github.com/cicailalala/GALoss) on the co-training core: CPS whose losses are GA's.

GA's ``train_AMOS_CPS.py`` and ``train_Synapse_CPS.py`` train two VNets (Kaiming and Xavier, as
CPS) with ``GACE(k=10, gama=0.5) + GADice`` on the labelled half and ``GACE(k=100, gama=0.5)`` of
each branch's logits against the other's argmax over the whole batch (``GALoss.py``); the cross
term's weight ramps to 0.1 over the whole schedule. No class weights. docs/protocol.md says where
GA's own schedule differs from DHC's protocol, under which this row is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch
from micd.methods.cotraining import CPS, CPSSettings
from micd.methods.losses import at_least_single, hard_labels

GA_SMOOTH = 1e-10
"""The smoothing of both of GA's losses (``smooth = 1e-10`` in ``GALoss.py``)."""


def gradient_aware_cross_entropy(logits: Tensor, target: Tensor, top_percent: float, gamma: float) -> Tensor:
    """GA's ``GACE``: the per-voxel CE of the ``int(N k / 100)`` hardest voxels of the batch (``k =
    top_percent``), each class's sum divided by ``(n_c + 1e-10)^(1 - gamma) K^gamma`` (``n_c`` the
    kept voxels of class c, ``K`` all kept voxels), summed over the classes.

    With ``gamma`` 0 a class's term is its mean loss; with 1 it is its share of the kept voxels' mean:
    ``gamma`` moves the weight from the frequent classes towards the rare ones.
    """
    per_voxel = F.cross_entropy(at_least_single(logits), target, reduction="none").reshape(-1)
    kept = int(per_voxel.numel() * top_percent / 100)
    if kept < per_voxel.numel():
        per_voxel, indices = torch.topk(per_voxel, kept, sorted=False)
        classes = target.reshape(-1).gather(0, indices)
    else:
        classes = target.reshape(-1)
    num_classes = logits.shape[1]
    loss_sum = torch.zeros(num_classes, dtype=per_voxel.dtype, device=per_voxel.device).index_add(0, classes, per_voxel)
    count = torch.bincount(classes, minlength=num_classes).to(per_voxel.dtype)
    normaliser = (count + GA_SMOOTH).pow(1 - gamma) * float(kept) ** gamma
    return (loss_sum / (normaliser + GA_SMOOTH)).sum()


def gradient_aware_dice(logits: Tensor, target: Tensor) -> Tensor:
    """GA's ``GADice`` on the softmax, background included, averaged over the classes: a class
    present in the batch's labels has the squared-denominator Dice loss ``1 - (2 sum p y + s) /
    (sum p^2 + sum y + s)``; an absent class ``sum p_c^2 / N`` (N the batch's voxels), whose gradient
    ``2 p_c / N`` pushes its probability down everywhere in proportion to it (GA's "gradient-aware"
    term: a plain Dice gives an absent class no gradient)."""
    num_classes = logits.shape[1]
    probs = at_least_single(logits).softmax(dim=1).transpose(0, 1).reshape(num_classes, -1)
    flat_target = target.reshape(-1)
    count = torch.bincount(flat_target, minlength=num_classes).to(probs.dtype)
    present = count > 0
    overlap = torch.zeros(num_classes, dtype=probs.dtype, device=probs.device).index_add(
        0, flat_target, probs.gather(0, flat_target.unsqueeze(0)).squeeze(0)
    )
    squares = probs.square().sum(dim=1)
    dice_loss = 1 - (2 * overlap + GA_SMOOTH) / (squares + count + GA_SMOOTH)
    absent_loss = (probs.detach() * probs).sum(dim=1) / flat_target.numel()
    return torch.where(present, dice_loss, absent_loss).mean()


@dataclass
class GASettings(CPSSettings):
    """GA's losses on CPS, with the values of GA's training scripts: top 10 % of the labelled voxels
    in the supervised CE, every voxel (100 %) in the cross term, gamma 0.5 in both."""

    supervised_top_percent: float = 10.0
    cross_top_percent: float = 100.0
    gamma: float = 0.5


class GACPS(CPS):
    name = "ga_cps"
    display_name = "GA-CPS"
    Settings = GASettings

    def __init__(self, settings: GASettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        for key in ("supervised_top_percent", "cross_top_percent"):
            value = getattr(settings, key)
            if not 0 < value <= 100:
                raise SettingsError(f"ga_cps: {key} is a percentage of the voxels, in (0, 100]; got {value}")
        super().__init__(settings, num_classes, network)

    def supervised_loss(self, p_a: Tensor, p_b: Tensor, batch: Batch, w_a: Tensor, w_b: Tensor) -> Tensor:
        n, s = batch.n_labelled, self.settings
        return sum(
            gradient_aware_cross_entropy(p[:n], batch.label, s.supervised_top_percent, s.gamma)
            + gradient_aware_dice(p[:n], batch.label)
            for p in (p_a, p_b)
        )

    def cross_loss(self, batch: Batch, p_a: Tensor, p_b: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
        s = self.settings
        return gradient_aware_cross_entropy(
            p_a, hard_labels(p_b), s.cross_top_percent, s.gamma
        ) + gradient_aware_cross_entropy(p_b, hard_labels(p_a), s.cross_top_percent, s.gamma)
