"""Mean Teacher and its uncertainty-aware variant UA-MT (Yu et al., MICCAI 2019).

One student and its EMA teacher. The student is supervised on the labelled half and held, on
the unlabelled half, to the teacher's softmax on a noisy copy of the input (mean squared
error of probabilities). UA-MT estimates the teacher's uncertainty by Monte-Carlo dropout over
several noisy passes and keeps only voxels whose predictive entropy is below a threshold that
rises from 3/4 to all of ``ln C`` with the ramp-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from micd.methods.base import (
    Batch,
    Method,
    Progress,
    ema_update,
    make_teacher,
    scheduled_rampup,
)
from micd.methods.losses import dice_ce


@dataclass
class MeanTeacherSettings:
    beta_max: float = 0.1  # consistency weight, as in UA-MT and DHC's reproduction
    rampup_epochs: float | None = None  # None: the whole schedule
    ema_decay: float = 0.99
    noise_std: float = 0.1  # teacher input noise: clip(N(0, std), -clip, clip)
    noise_clip: float = 0.2


def input_noise(x: Tensor, std: float, clip: float) -> Tensor:
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


def enable_dropout(module: nn.Module, enabled: bool) -> None:
    """Switch only the dropout layers to training mode (Monte-Carlo dropout), BN stays frozen."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.dropout._DropoutNd):
            layer.train(enabled)


class MeanTeacher(Method):
    name = "mean_teacher"
    Settings = MeanTeacherSettings

    def __init__(self, settings: MeanTeacherSettings, num_classes: int, network: Callable[[], nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.student = self.new_network()
        self.teacher = make_teacher(self.student)

    def students(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def teachers(self) -> list[nn.Module]:
        return [self.teacher]

    def consistency_weight(self, progress: Progress) -> float:
        s = self.settings
        return scheduled_rampup(progress, s.rampup_epochs, s.beta_max)

    def consistency(self, student_probs: Tensor, unlabelled: Tensor, progress: Progress) -> Tensor:
        s = self.settings
        with torch.no_grad():
            teacher_probs = self.teacher(unlabelled + input_noise(unlabelled, s.noise_std, s.noise_clip)).softmax(1)
        return ((student_probs - teacher_probs.float()) ** 2).mean()

    def training_step(self, batch: Batch, progress: Progress) -> dict[str, Tensor]:
        n = batch.n_labelled
        logits = self.student(batch.image)
        sup = dice_ce(logits[:n], batch.label)
        consistency = self.consistency(logits[n:].float().softmax(1), batch.image[n:], progress)
        beta = self.consistency_weight(progress)
        return {
            "loss": sup + beta * consistency,
            "sup": sup.detach(),
            "consistency": consistency.detach(),
            "beta": torch.tensor(beta),
        }

    def after_step(self, progress: Progress) -> None:
        ema_update(self.teacher, self.student, self.settings.ema_decay, progress.iteration)

    def predict(self, x: Tensor) -> Tensor:
        return self.student(x)


@dataclass
class UAMTSettings(MeanTeacherSettings):
    mc_passes: int = 8  # noisy teacher passes with dropout on, to estimate uncertainty
    threshold_start: float = 0.75  # of ln C; rises to 1.0 with the ramp-up


class UAMT(MeanTeacher):
    name = "uamt"
    Settings = UAMTSettings

    def uncertainty(self, unlabelled: Tensor) -> tuple[Tensor, Tensor]:
        """Mean teacher probabilities over the MC passes and their predictive entropy per voxel."""
        s = self.settings
        enable_dropout(self.teacher, True)
        try:
            with torch.no_grad():
                mean = (
                    sum(
                        self.teacher(unlabelled + input_noise(unlabelled, s.noise_std, s.noise_clip)).float().softmax(1)
                        for _ in range(s.mc_passes)
                    )
                    / s.mc_passes
                )
        finally:
            enable_dropout(self.teacher, False)
        entropy = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
        return mean, entropy

    def uncertainty_threshold(self, progress: Progress) -> float:
        s = self.settings
        ramp = scheduled_rampup(progress, s.rampup_epochs, 1.0)
        return (s.threshold_start + (1 - s.threshold_start) * ramp) * math.log(self.num_classes)

    def consistency(self, student_probs: Tensor, unlabelled: Tensor, progress: Progress) -> Tensor:
        teacher_probs, entropy = self.uncertainty(unlabelled)
        certain = (entropy < self.uncertainty_threshold(progress)).float()
        squared = (student_probs - teacher_probs) ** 2
        # mean squared error over the certain voxels (and the classes)
        return (certain * squared).sum() / (certain.sum() * squared.shape[1] + 1e-16)
