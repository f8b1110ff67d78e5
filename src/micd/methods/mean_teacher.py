"""Mean Teacher and its uncertainty-aware variant UA-MT (Yu et al., MICCAI 2019).

One student and its EMA teacher. The student is supervised on the labelled half and held, on
the unlabelled half, to the teacher's softmax on a noisy copy of the input (squared error of
probabilities). UA-MT estimates the teacher's uncertainty from several noisy passes with
dropout and keeps only voxels whose predictive entropy is below a threshold that rises with the
ramp-up. UA-MT behaves as DHC's ``code/train_uamt.py`` (docs/protocol.md), its teacher in training
mode with BatchNorm statistics of its own (``teachers.EMATeacher``); Mean Teacher has no script in
DHC's repository and is UA-MT without the uncertainty mask, its teacher in eval mode by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, StepResult, gaussian_rampup
from micd.methods.losses import dice_ce
from micd.methods.teachers import StudentWithTeacher


@dataclass
class MeanTeacherSettings:
    beta_max: float = 0.1  # consistency weight, as in UA-MT and DHC's reproduction
    rampup_epochs: float | None = None  # None: the whole schedule
    ema_decay: float = 0.99
    noise_std: float = 0.1  # teacher input noise: clip(N(0, std), -clip, clip)
    noise_clip: float = 0.2
    init: str = "default"  # DHC's train_uamt.py leaves PyTorch's initialisation
    # see teachers.EMATeacher: the usual Mean Teacher, stepped by the iteration and without dropout
    ema_step: str = "iteration"
    teacher_mode: str = "eval"


def input_noise(x: Tensor, std: float, clip: float) -> Tensor:
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


@contextmanager
def monte_carlo_dropout(net: nn.Module) -> Iterator[None]:
    """Dropout layers in training mode for the block (a teacher in eval mode keeps its BatchNorm
    statistics); a teacher already in training mode is left as it is."""
    layers = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and not m.training]
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()


class MeanTeacher(StudentWithTeacher):
    name = "mean_teacher"
    display_name = "Mean Teacher"
    Settings = MeanTeacherSettings

    def supervised_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return dice_ce(logits, labels)

    def consistency(self, student_logits: Tensor, unlabelled: Tensor, progress: Progress) -> Tensor:
        s = self.settings
        with torch.no_grad():
            teacher_probs = self.teacher(unlabelled + input_noise(unlabelled, s.noise_std, s.noise_clip)).softmax(1)
        return ((student_logits.float().softmax(1) - teacher_probs.float()) ** 2).mean()

    def training_step(self, batch: Batch, progress: Progress) -> StepResult:
        n = batch.n_labelled
        logits = self.student(batch.image)
        sup = self.supervised_loss(logits[:n], batch.label)
        consistency = self.consistency(logits[n:], batch.image[n:], progress)
        return self.loss_terms(sup, self.consistency_weight(progress), consistency=consistency)


@dataclass
class UAMTSettings(MeanTeacherSettings):
    mc_passes: int = 8  # noisy teacher passes with dropout, to estimate uncertainty (even: run in pairs)
    threshold_start: float = 0.75  # of the threshold's maximum; rises to all of it with the ramp-up
    # the threshold's maximum is ln(threshold_classes): DHC keeps the two-class ln 2 of UA-MT's
    # left-atrium code; 0 takes ln C of the data set's classes
    threshold_classes: int = 2
    supervised_scale: float = 0.5  # DHC: 0.5 * (CE + Dice)
    dice_smooth: float = 1e-8  # DHC: SoftDiceLoss(smooth=1e-8)
    teacher_mode: str = "train"  # DHC never switches its EMA model to eval: dropout on, statistics its own
    ema_step: str = "epoch"  # DHC passes the epoch as the EMA's step: a = min(1 - 1/(epoch + 1), decay)


class UAMT(MeanTeacher):
    # DHC's train_uamt.py draws its teacher on its own; the first EMA step (decay 0 in epoch 0)
    # copies the student, so only the first iteration's targets differ
    independent_teacher = True
    name = "uamt"
    display_name = "UA-MT"
    Settings = UAMTSettings

    def __init__(self, settings: UAMTSettings, num_classes: int, network: Callable[..., nn.Module]) -> None:
        if settings.mc_passes < 2 or settings.mc_passes % 2:
            raise SettingsError(f"uamt mc_passes must be even and at least 2, got {settings.mc_passes}")
        super().__init__(settings, num_classes, network)

    def supervised_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``scale * (CE + soft Dice loss)``, unweighted, Dice over the foreground classes."""
        return self.settings.supervised_scale * dice_ce(logits, labels, smooth=self.settings.dice_smooth)

    @torch.no_grad()
    def uncertainty(self, unlabelled: Tensor) -> tuple[Tensor, Tensor]:
        """Mean teacher probabilities over the noisy passes and their predictive entropy per voxel.

        As DHC: the passes run two at a time, the unlabelled batch repeated twice per forward.
        """
        s = self.settings
        repeated = unlabelled.repeat(2, 1, 1, 1, 1)
        with monte_carlo_dropout(self.teacher):
            probs = torch.cat(
                [
                    self.teacher(repeated + input_noise(repeated, s.noise_std, s.noise_clip)).float().softmax(1)
                    for _ in range(s.mc_passes // 2)
                ]
            )
        mean = probs.reshape(s.mc_passes, unlabelled.shape[0], *probs.shape[1:]).mean(0)
        entropy = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
        return mean, entropy

    def uncertainty_threshold(self, progress: Progress) -> float:
        """``(start + (1 - start) * ramp(epoch)) * ln K``, the ramp at the current epoch over the whole run."""
        s = self.settings
        ramp = gaussian_rampup(progress.epoch, progress.max_epochs, 1.0)
        classes = s.threshold_classes or self.num_classes
        return (s.threshold_start + (1 - s.threshold_start) * ramp) * math.log(classes)

    def consistency(self, student_logits: Tensor, unlabelled: Tensor, progress: Progress) -> Tensor:
        """Squared error of probabilities on the certain voxels, summed over classes and divided
        by twice the number of certain voxels (DHC's normalisation)."""
        s = self.settings
        with torch.no_grad():
            teacher_probs = self.teacher(unlabelled + input_noise(unlabelled, s.noise_std, s.noise_clip)).softmax(1)
        _, entropy = self.uncertainty(unlabelled)
        certain = (entropy < self.uncertainty_threshold(progress)).float()
        squared = (student_logits.float().softmax(1) - teacher_probs.float()) ** 2
        return (certain * squared).sum() / (2 * certain.sum() + 1e-16)
