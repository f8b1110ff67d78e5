"""EMA teachers (``micd.methods.teachers``): UA-MT's and Basak et al.'s teachers follow DHC's
``update_ema_variables`` (``code/train_uamt.py``, ``code/train_acisis.py``): parameters averaged,
BatchNorm statistics their own, from their own forward passes in training mode (issue 28)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from micd.methods import Batch, Progress, build_method
from micd.methods.teachers import EMATeacher, ema_update

NUM_CLASSES = 4


def dhc_update_ema_variables(model: nn.Module, ema_model: nn.Module, alpha: float, global_step: int) -> None:
    """DHC's update, line for line (``add_(1 - alpha, param.data)`` in its older PyTorch)."""
    alpha = min(1 - 1 / (global_step + 1), alpha)
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.data.mul_(alpha).add_(param.data, alpha=1 - alpha)


def batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        image=torch.rand(4, 1, 16, 16, 16, generator=g),
        label=torch.randint(0, NUM_CLASSES, (2, 16, 16, 16), generator=g),
    )


def batchnorm_statistics(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}


@pytest.mark.parametrize("name", ["uamt", "acisis"])
def test_dhcs_teachers_average_the_parameters_and_keep_their_own_statistics(name):
    torch.manual_seed(0)
    method = build_method(name, {}, NUM_CLASSES, n_filters=2)
    method.initialise(torch.tensor([5000.0, 2000.0, 800.0, 100.0]), unlabelled_cases=6)
    method.train()
    assert method.teacher.training  # DHC never puts its EMA model in eval mode
    optimiser = torch.optim.SGD(method.student.parameters(), lr=0.01, momentum=0.9)
    for iteration in range(3):
        progress = Progress(epoch=iteration, max_epochs=10, iteration=iteration, iterations_per_epoch=1)
        terms = method.training_step(batch(iteration), progress)
        optimiser.zero_grad()
        terms.loss.backward()
        optimiser.step()
        # the reference: DHC's update of the teacher as this step's forward passes left it
        expected = copy.deepcopy(method.teacher)
        dhc_update_ema_variables(method.student, expected, 0.99, progress.epoch)
        own = batchnorm_statistics(method.teacher)
        method.after_step(progress)
        for key, value in expected.state_dict().items():
            assert torch.equal(method.teacher.state_dict()[key], value), f"step {iteration + 1}: {key}"
        assert all(torch.equal(batchnorm_statistics(method.teacher)[k], v) for k, v in own.items())
    student = batchnorm_statistics(method.student)
    assert any(not torch.equal(v, student[k]) for k, v in own.items() if "running_var" in k)


def test_a_teacher_in_eval_mode_takes_its_students_statistics():
    student = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))
    teacher = copy.deepcopy(student)
    student.train()(torch.rand(2, 1, 4, 4, 4) * 5)
    ema = EMATeacher("mean_teacher", decay=0.99)  # eval mode, stepped by the iteration
    ema.follow(teacher, student, Progress(epoch=3, max_epochs=10, iteration=1))
    assert torch.equal(teacher[1].running_var, student[1].running_var)
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)  # a = min(1 - 1/2, 0.99) halves, but the parameters have not moved


def test_mean_teacher_and_micd_teachers_run_in_eval_mode_with_the_students_statistics():
    for name, student, teacher in (("mean_teacher", "student", "teacher"), ("micd", "student_a", "teacher_a")):
        torch.manual_seed(0)
        method = build_method(name, {}, NUM_CLASSES, n_filters=2).train()
        assert not getattr(method, teacher).training
        getattr(method, student)(batch(0).image)  # the student's statistics move, the teacher's do not
        method.after_step(Progress(epoch=0, max_epochs=10, iteration=0))
        ours, theirs = batchnorm_statistics(getattr(method, teacher)), batchnorm_statistics(getattr(method, student))
        assert all(torch.equal(v, theirs[k]) for k, v in ours.items()), name


def test_ema_update_without_statistics_leaves_the_buffers():
    teacher, student = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.running_var.fill_(4.0)
    with torch.no_grad():
        student.weight.fill_(3.0)
    ema_update(teacher, student, decay=0.99, step=1, copy_statistics=False)  # a = 0.5
    assert torch.equal(teacher.running_var, torch.ones(3))
    assert torch.equal(teacher.weight, torch.full((3,), 2.0))
