"""Co-training baselines that are MICD's branch pair with parts switched off.

With masking, cross feature consistency and cross model discrepancy off, MICD's masked cross
pseudo consistency is cross pseudo supervision on clean inputs, so these rows share every
line of their training step with MICD and differ from it only in their settings' defaults
(CLD also in how it masks and reduces the cross loss). Each behaves as DHC's script for it
(``code/train_dhc.py``, ``train_cps.py``, ``train_cld.py``; docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from micd.methods.base import Batch, Progress
from micd.methods.losses import dice_ce, hard_labels
from micd.methods.micd import MICD, MICDSettings
from micd.methods.weighting import LabelledFrequency


@dataclass
class DHCSettings(MICDSettings):
    """DHC (Wang & Li, MICCAI 2023): DiffDW branch and DistDW branch, cross pseudo supervision."""

    masking: bool = False
    cfc: bool = False
    cmd: bool = False


class DHC(MICD):
    name = "dhc"
    display_name = "DHC"
    Settings = DHCSettings


@dataclass
class DistDWSettings(DHCSettings):
    """DHC's distribution-aware half: DistDW weights on both branches."""

    weighting_a: str = "distdw"


class DistDWOnly(MICD):
    name = "distdw"
    display_name = "DistDW"
    Settings = DistDWSettings


@dataclass
class DiffDWSettings(DHCSettings):
    """DHC's difficulty-aware half: DiffDW weights on both branches."""

    weighting_b: str = "diffdw"


class DiffDWOnly(MICD):
    name = "diffdw"
    display_name = "DiffDW"
    Settings = DiffDWSettings


@dataclass
class CPSSettings(DHCSettings):
    """CPS (Chen et al., CVPR 2021): two differently initialised networks (DHC: Kaiming and
    Xavier), each supervised by the other's hard pseudo-labels, with uniform class weights."""

    heterogeneous: bool = False
    init_b: str = "xavier"


class CPS(MICD):
    name = "cps"
    display_name = "CPS"
    Settings = CPSSettings


@dataclass
class CLDSettings(CPSSettings):
    """CLD (Lin et al., MICCAI 2022) as DHC's ``train_cld.py``: CPS whose losses weight each class
    by its labelled-set rarity ``(max N / N_c)^weight_power``, and whose cross loss keeps each
    voxel with a probability that falls with its predicted class's confidence."""

    weight_power: float = 1 / 3
    confidence_momentum: float = 0.999  # EMA of the confidence bank
    confidence_every: int = 8  # iterations whose confidences are pooled per bank update (--confs_iter)
    sampling_gamma: float = 0.5  # sampling rate ((1 - conf) / max(1 - conf))^gamma
    # Patches of the labelled cases centred on a class with probability proportional to its
    # weight: our earlier reconstruction; DHC's script crops uniformly.
    weighted_sampling: bool = False


class ConfidenceBank(nn.Module):
    """Per-class mean confidence (softmax of the true class on labelled voxels), as CLD keeps it.

    Confidences are pooled over ``every`` iterations; the first pooled value replaces the
    (random) initial one, later ones are blended in with ``momentum``.
    """

    def __init__(self, initial: Tensor, momentum: float, every: int) -> None:
        super().__init__()
        self.momentum, self.every = momentum, every
        self.register_buffer("confidences", initial.clone().float())
        self.register_buffer("pooled", torch.zeros_like(self.confidences))
        self.register_buffer("counts", torch.zeros_like(self.confidences))
        self.register_buffer("recorded", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def record(self, logits: Tensor, labels: Tensor) -> None:
        num_classes = logits.shape[1]
        probs = logits.float().softmax(1)
        flat = labels.reshape(-1)
        true_class_prob = probs.gather(1, labels.unsqueeze(1)).reshape(-1)
        self.pooled += torch.zeros(num_classes, device=logits.device).index_add(0, flat, true_class_prob)
        self.counts += torch.bincount(flat, minlength=num_classes).float()
        self.recorded += 1
        if int(self.recorded) % self.every == 0:
            fresh = self.pooled / (self.counts + 1e-12)
            if int(self.recorded) == self.every:
                self.confidences.copy_(fresh)
            else:
                self.confidences.mul_(self.momentum).add_((1 - self.momentum) * fresh)
            self.pooled.zero_()
            self.counts.zero_()

    def sampling_rates(self, gamma: float) -> Tensor:
        unsure = 1 - self.confidences
        return (unsure / (unsure.max() + 1e-12)) ** gamma


def sampling_mask(logits: Tensor, rates: Tensor) -> Tensor:
    """1 where a voxel is kept: with probability ``rates[c]`` for a voxel predicted as class c."""
    predicted = hard_labels(logits)
    return (torch.rand(predicted.shape, device=logits.device) > 1 - rates[predicted]).float()


def masked_weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """Per-voxel CE times its target class's weight and the mask, averaged over *all* voxels
    (DHC's ``WeightedCrossEntropyLoss``: not normalised by the weights or the mask)."""
    per_voxel = F.cross_entropy(logits.float(), target, weight=weight.float(), reduction="none")
    return (per_voxel * mask).mean()


class CLD(MICD):
    name = "cld"
    display_name = "CLD"
    Settings = CLDSettings

    def __init__(self, settings: CLDSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.weighting_a = LabelledFrequency(num_classes, settings.weight_power)
        self.weighting_b = self.weighting_a  # one set of fixed weights for both branches
        initial = torch.rand(num_classes)  # DHC: random, the same for both banks
        self.bank_a = ConfidenceBank(initial, settings.confidence_momentum, settings.confidence_every)
        self.bank_b = ConfidenceBank(initial, settings.confidence_momentum, settings.confidence_every)

    def initialise(self, labelled_counts: Tensor, unlabelled_cases: int = 0) -> None:
        self.weighting_a.initialise(labelled_counts)

    def patch_label_probabilities(self) -> dict[int, float] | None:
        if not self.settings.weighted_sampling:
            return None
        return {c: float(w) for c, w in enumerate(self.weighting_a.weights)}

    def training_step(self, batch: Batch, progress: Progress) -> dict[str, Tensor]:
        s = self.settings
        x, y, n = batch.image, batch.label, batch.n_labelled
        p_a, p_b = self.student_a(x), self.student_b(x)
        self.bank_a.record(p_a[:n], y)
        self.bank_b.record(p_b[:n], y)
        w = self.weighting_a.weights
        sup = dice_ce(p_a[:n], y, w) + dice_ce(p_b[:n], y, w)
        mask_a = sampling_mask(p_a, self.bank_a.sampling_rates(s.sampling_gamma))
        mask_b = sampling_mask(p_b, self.bank_b.sampling_rates(s.sampling_gamma))
        cross = masked_weighted_cross_entropy(p_a, hard_labels(p_b), w, mask_a) + masked_weighted_cross_entropy(
            p_b, hard_labels(p_a), w, mask_b
        )
        return self.loss_terms(sup, self.consistency_weight(progress), cps=cross)
