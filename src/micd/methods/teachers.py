"""EMA teachers: a frozen copy of a student that follows it by an exponential moving average.

The teacher network stays an attribute of its method (its state keys are the method's); an
:class:`EMATeacher` says how it follows its student: the decay, which counter is the EMA's step,
and whether it runs in training mode. A teacher in training mode keeps the BatchNorm statistics
of its own forward passes and only its parameters are averaged (DHC's ``update_ema_variables``,
``code/train_uamt.py``, ``code/train_acisis.py``); a teacher in eval mode has no statistics of
its own and takes its student's after every step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from micd.errors import SettingsError
from micd.methods.base import Method, Progress

EMA_STEPS = ("epoch", "iteration")
TEACHER_MODES = ("train", "eval")


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of a student: no gradients, eval mode (no dropout)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int, copy_statistics: bool) -> None:
    """``T <- a T + (1 - a) S`` over the parameters, ``a = min(1 - 1/(step + 1), decay)``; with
    ``copy_statistics`` the student's buffers (BatchNorm statistics) are copied too."""
    a = min(1.0 - 1.0 / (step + 1), decay)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(a).add_(s.detach(), alpha=1.0 - a)
    if copy_statistics:
        for t, s in zip(teacher.buffers(), student.buffers()):
            t.copy_(s)


class EMATeacher:
    """How a teacher follows its student. ``step``: ``iteration`` or ``epoch`` (DHC passes the
    epoch); ``mode``: ``eval`` (no dropout, the student's statistics) or ``train`` (DHC's
    scripts never switch their EMA model to eval: dropout on, statistics of its own)."""

    def __init__(self, method: str, decay: float, step: str = "iteration", mode: str = "eval") -> None:
        if step not in EMA_STEPS:
            raise SettingsError(f"{method} ema_step must be 'epoch' or 'iteration', got {step!r}")
        if mode not in TEACHER_MODES:
            raise SettingsError(f"{method} teacher_mode must be 'train' or 'eval', got {mode!r}")
        self.decay, self.step, self.mode = decay, step, mode

    def follow(self, teacher: nn.Module, student: nn.Module, progress: Progress) -> None:
        """The EMA update after the optimiser stepped."""
        step = progress.epoch if self.step == "epoch" else progress.iteration
        ema_update(teacher, student, self.decay, step, copy_statistics=self.mode == "eval")

    def set_mode(self, teacher: nn.Module, training: bool) -> None:
        """Put the teacher in its mode while the method trains; eval mode otherwise."""
        teacher.train(training and self.mode == "train")


class StudentWithTeacher(Method):
    """One student and its EMA teacher, inference on the student. The settings give ``init``
    (both networks) and the teacher's ``ema_decay``, ``ema_step`` and ``teacher_mode``;
    ``independent_teacher`` says whether the teacher is drawn on its own (the first EMA step, with
    decay 0 in the first epoch, then copies the student) or copied from the student."""

    independent_teacher: ClassVar[bool] = False

    def __init__(self, settings: Any, num_classes: int, network: Callable[..., nn.Module]) -> None:
        super().__init__(settings, num_classes, network)
        self.ema = EMATeacher(self.name, settings.ema_decay, settings.ema_step, settings.teacher_mode)
        self.student = self.new_network(settings.init)
        self.teacher = make_teacher(self.new_network(settings.init) if self.independent_teacher else self.student)

    def students(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def teachers(self) -> list[nn.Module]:
        return [self.teacher]

    def train(self, mode: bool = True) -> "StudentWithTeacher":
        super().train(mode)
        self.ema.set_mode(self.teacher, mode)
        return self

    def after_step(self, progress: Progress) -> None:
        self.ema.follow(self.teacher, self.student, progress)

    def predict(self, x: Tensor) -> Tensor:
        return self.student(x)
