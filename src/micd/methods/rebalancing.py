"""CReST and SimiS: co-training with class weights re-balanced from the pseudo-label distribution.

DHC's paper compares against two class-imbalanced semi-supervised methods adapted to its
co-training protocol (``code/train_crest.py``, ``code/train_simis.py``). Both are CPS (a Kaiming
and a Xavier initialised VNet, each taught by the other's argmax) whose two losses weight the
classes; each branch keeps its own weights, started from the labelled set's voxel counts and
blended every iteration (momentum 0.99) with weights from the class counts of the branch's own
argmax. The methods differ only in the weighting:

- CReST (Wei et al., CVPR 2021): the class-rebalancing sampling rates of its Eq. (1). With
  ``mu_c = (N_c / max N)^alpha`` (alpha 1/3), the class of frequency rank l (most frequent first)
  gets the mu of the class of rank C - 1 - l, so the rarest class weighs 1 and the most frequent
  the smallest mu. Counted on the branch's argmax over the unlabelled half.
- SimiS (Chen et al., arXiv 2211.11086, 2022): ``w_c = C (max_k P_k - P_c)`` with ``P`` the class
  frequencies, so the most frequent class gets 0; counted on the branch's argmax over the whole
  batch, labelled patches included. Its weights start from C on every class.

Everything else is the co-training core's step (:class:`~micd.methods.cotraining.CoTraining`):
weighted Dice+CE on the labelled half and weighted cross pseudo supervision on the whole batch,
each branch with its own weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from micd.methods.cotraining import CPS, CPSSettings
from micd.methods.losses import class_voxel_counts, hard_labels
from micd.methods.weighting import EPS, ClassWeighting


def predicted_class_counts(num_classes: int, *logits: Tensor) -> Tensor:
    """Voxel count per class of the argmax of every given logits tensor together (float64)."""
    counts = torch.zeros(num_classes, dtype=torch.float64, device=logits[0].device)
    for part in logits:
        if part.shape[0] > 0:
            counts += class_voxel_counts(hard_labels(part), num_classes)
    return counts


class MomentumClassWeighting(ClassWeighting):
    """Weights blended each iteration with fresh ones: ``w <- m w + (1 - m) fresh``, in float32 as DHC's
    ``utils.EMA`` on its CUDA float tensors."""

    def __init__(self, num_classes: int, momentum: float) -> None:
        super().__init__(num_classes)
        self.momentum = momentum

    def from_counts(self, counts: Tensor) -> Tensor:
        """The fresh weights for these voxel counts per class."""
        raise NotImplementedError

    def blend(self, counts: Tensor) -> Tensor:
        fresh = self.from_counts(counts.to(self.weights.device)).float()
        self.weights.mul_(self.momentum).add_((1 - self.momentum) * fresh)
        return self.weights


class CReSTWeighting(MomentumClassWeighting):
    """CReST's class-rebalancing rates as class weights, from the labelled ground truth, then blended
    with the rates of the branch's argmax over the unlabelled half.

    ``mu_c = ((N_c + eps) / (max N + eps))^power``; ranking the classes by ``mu`` (largest first,
    equal values in class order), the class at rank l gets the ``mu`` at rank C - 1 - l. Classes
    absent from the counts tie, and the rank order then decides which of them gets which value.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, power: float = 1 / 3) -> None:
        super().__init__(num_classes, momentum)
        self.power = power

    def from_counts(self, counts: Tensor) -> Tensor:
        counts = counts.double()
        mu = ((counts + EPS) / (counts.max() + EPS)) ** self.power
        by_rank = torch.sort(mu, descending=True, stable=True)
        rates = torch.empty_like(mu)
        rates[by_rank.indices] = by_rank.values.flip(0)
        return rates

    def initialise(self, labelled_counts: Tensor) -> None:
        self.weights.copy_(self.from_counts(labelled_counts.to(self.weights.device)).float())

    def update(self, logits_labelled: Tensor, labels: Tensor, logits_unlabelled: Tensor) -> Tensor:
        if logits_unlabelled.shape[0] == 0:
            return self.weights
        return self.blend(predicted_class_counts(self.num_classes, logits_unlabelled))


class SimiSWeighting(MomentumClassWeighting):
    """SimiS's class-balancing weights ``C (max_k P_k - P_c)``, ``P_c = (N_c + eps) / (sum N + eps)``.

    They start at C for every class blended once with the labelled ground truth's weights, then
    are blended each iteration with the weights of the branch's argmax over the whole batch (the
    labelled patches' predictions too, never their labels).
    """

    def __init__(self, num_classes: int, momentum: float = 0.99) -> None:
        super().__init__(num_classes, momentum)

    def from_counts(self, counts: Tensor) -> Tensor:
        counts = counts.double()
        frequency = (counts + EPS) / (counts.sum() + EPS)
        return self.num_classes * (frequency.max() - frequency)

    def initialise(self, labelled_counts: Tensor) -> None:
        self.weights.fill_(self.num_classes)
        self.blend(labelled_counts)

    def update(self, logits_labelled: Tensor, labels: Tensor, logits_unlabelled: Tensor) -> Tensor:
        return self.blend(predicted_class_counts(self.num_classes, logits_labelled, logits_unlabelled))


@dataclass
class CReSTSettings(CPSSettings):
    """CReST as DHC's ``train_crest.py``: CPS (Kaiming and Xavier branches, ``init_a``/``init_b``)
    whose losses use each branch's :class:`CReSTWeighting`."""

    weight_momentum: float = 0.99  # train_crest.py:244-245, CReST(..., momentum=0.99)
    weight_power: float = 1 / 3  # train_crest.py:158, np.power(..., 1/3): CReST's alpha


class CReST(CPS):
    name = "crest"
    display_name = "CReST"
    Settings = CReSTSettings

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        return tuple(
            CReSTWeighting(self.num_classes, self.settings.weight_momentum, self.settings.weight_power) for _ in "ab"
        )


@dataclass
class SimiSSettings(CPSSettings):
    """SimiS as DHC's ``train_simis.py``: CPS (Kaiming and Xavier branches, ``init_a``/``init_b``)
    whose losses use each branch's :class:`SimiSWeighting`."""

    # train_simis.py:246-247, SimiS(..., momentum=0.99); the class's own default (0.95, :141) is unused
    weight_momentum: float = 0.99


class SimiS(CPS):
    name = "simis"
    display_name = "SimiS"
    Settings = SimiSSettings

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        return tuple(SimiSWeighting(self.num_classes, self.settings.weight_momentum) for _ in "ab")
