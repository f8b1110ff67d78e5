"""CLD (Lin et al., MICCAI 2022) as DHC's ``code/train_cld.py`` trains it (docs/protocol.md).

CPS whose losses weight each class by its labelled-set rarity ``(max N / N_c)^weight_power``
(one set of fixed weights for both branches), and whose cross loss keeps each voxel with a
probability that falls with its predicted class's confidence, kept per branch in a
:class:`ConfidenceBank`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from micd.methods.base import Batch
from micd.methods.cotraining import CPS, CPSSettings
from micd.methods.losses import hard_labels, masked_cross_entropy
from micd.methods.weighting import ClassWeighting, LabelledFrequency


@dataclass
class CLDSettings(CPSSettings):
    """CPS's settings and those of CLD's weights, confidence banks and voxel sampling."""

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


class CLD(CPS):
    name = "cld"
    display_name = "CLD"
    Settings = CLDSettings

    def __init__(self, settings: CLDSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        initial = torch.rand(num_classes)  # DHC: random, the same for both banks
        self.bank_a = ConfidenceBank(initial, settings.confidence_momentum, settings.confidence_every)
        self.bank_b = ConfidenceBank(initial, settings.confidence_momentum, settings.confidence_every)

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        weighting = LabelledFrequency(self.num_classes, self.settings.weight_power)
        return weighting, weighting

    def patch_label_probabilities(self) -> dict[int, float] | None:
        if not self.settings.weighted_sampling:
            return None
        return {c: float(w) for c, w in enumerate(self.weighting_a.weights)}

    def cross_loss(self, batch: Batch, p_a: Tensor, p_b: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
        """Weighted CE against the other branch's argmax on the voxels each branch's bank samples."""
        n, gamma = batch.n_labelled, self.settings.sampling_gamma
        self.bank_a.record(p_a[:n], batch.label)
        self.bank_b.record(p_b[:n], batch.label)
        mask_a = sampling_mask(p_a, self.bank_a.sampling_rates(gamma))
        mask_b = sampling_mask(p_b, self.bank_b.sampling_rates(gamma))
        return masked_cross_entropy(p_a, hard_labels(p_b), mask_a, w_a) + masked_cross_entropy(
            p_b, hard_labels(p_a), mask_b, w_b
        )
