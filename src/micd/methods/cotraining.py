"""The co-training core every two-branch row builds on, and CPS, the core itself.

Two students (A and B, each with its own initialisation and optimiser), a class weighting per
branch, a supervised Dice+CE of each branch on the labelled half with its branch's weights,
cross pseudo supervision over the whole batch (each branch's weighted CE against the other
branch's argmax), ``loss = sup + beta(t) cps`` with DHC's ramp-up of beta, and at inference the
mean of both branches' logits (DHC's ``test.py --cps AB``).

A row that builds on :class:`CoTraining` gives its parts: its class weightings
(:meth:`CoTraining.class_weightings`) and, where it selects or reweights the voxels that teach,
its cross loss (:meth:`CoTraining.cross_loss`); its settings class extends
:class:`CoTrainingSettings` with the keys of its own mechanism only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from micd.methods.base import Batch, Method, Progress, StepResult
from micd.methods.losses import dice_ce, hard_labels, weighted_cross_entropy
from micd.methods.weighting import ClassWeighting


@dataclass
class CoTrainingSettings:
    """What every co-training row computes with: its branches' initialisations (``kaiming``,
    ``xavier`` or ``default``) and the ramped weight of its cross loss."""

    init_a: str = "kaiming"  # DHC's kaiming_normal_init_weight
    init_b: str = "kaiming"
    beta_max: float = 0.1  # DHC's shell scripts: -w 0.1
    rampup_epochs: float | None = None  # None: the whole schedule


def cross_pseudo_supervision(
    learner_a: Tensor,
    learner_b: Tensor,
    teacher_a: Tensor,
    teacher_b: Tensor,
    weight_a: Tensor | None = None,
    weight_b: Tensor | None = None,
) -> Tensor:
    """Each branch's learner logits, CE with its class weights, against the argmax of the other
    branch's teacher logits (for CPS both are the clean predictions)."""
    return weighted_cross_entropy(learner_a, hard_labels(teacher_b), weight_a) + weighted_cross_entropy(
        learner_b, hard_labels(teacher_a), weight_b
    )


class CoTraining(Method):
    """The two-branch core; subclasses set ``name``, ``display_name``, ``Settings`` and their parts."""

    def __init__(self, settings: CoTrainingSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.student_a = self.new_network(settings.init_a)
        self.student_b = self.new_network(settings.init_b)
        self.weighting_a, self.weighting_b = self.class_weightings()

    def class_weightings(self) -> tuple[ClassWeighting, ClassWeighting]:
        """The class weighting of branch A and of branch B (the same object where both share
        one): uniform here."""
        return ClassWeighting(self.num_classes), ClassWeighting(self.num_classes)

    def students(self) -> dict[str, nn.Module]:
        return {"student_a": self.student_a, "student_b": self.student_b}

    def initialise(self, labelled_counts: Tensor, unlabelled_cases: int = 0) -> None:
        self.weighting_a.initialise(labelled_counts)
        self.weighting_b.initialise(labelled_counts)

    def class_weights(self, p_a: Tensor, p_b: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Each branch's weighting updated from its predictions; the weights of this iteration."""
        n = batch.n_labelled
        w_a = self.weighting_a.update(p_a[:n], batch.label, p_a[n:])
        w_b = self.weighting_b.update(p_b[:n], batch.label, p_b[n:])
        return w_a, w_b

    def supervised_loss(self, p_a: Tensor, p_b: Tensor, batch: Batch, w_a: Tensor, w_b: Tensor) -> Tensor:
        n = batch.n_labelled
        return dice_ce(p_a[:n], batch.label, w_a) + dice_ce(p_b[:n], batch.label, w_b)

    def cross_loss(self, batch: Batch, p_a: Tensor, p_b: Tensor, w_a: Tensor, w_b: Tensor) -> Tensor:
        """The unsupervised term, logged as ``cps``: cross pseudo supervision here."""
        return cross_pseudo_supervision(p_a, p_b, p_a, p_b, w_a, w_b)

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        p_a, p_b = self.student_a(batch.image), self.student_b(batch.image)
        w_a, w_b = self.class_weights(p_a, p_b, batch)
        sup = self.supervised_loss(p_a, p_b, batch, w_a, w_b)
        cross = self.cross_loss(batch, p_a, p_b, w_a, w_b)
        return self.loss_terms(sup, self.consistency_weight(progress), cps=cross)

    def predict(self, x: Tensor) -> Tensor:
        return (self.student_a(x) + self.student_b(x)) / 2


@dataclass
class CPSSettings(CoTrainingSettings):
    """CPS (Chen et al., CVPR 2021) as DHC's ``train_cps.py``: two differently initialised
    networks (Kaiming and Xavier), each supervised by the other's hard pseudo-labels, with
    uniform class weights."""

    init_b: str = "xavier"


class CPS(CoTraining):
    name = "cps"
    display_name = "CPS"
    Settings = CPSSettings
