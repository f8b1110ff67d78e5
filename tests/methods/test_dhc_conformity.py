"""Our losses, weightings and baselines against DHC's formulas (github.com/xmed-lab/DHC, the
protocol's ground truth), written out here on small tensors: each reference function below
restates what the named DHC file computes, and ours must agree to 1e-6 over several
iterations, classes missing from the batch included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_dc_and_ce, dhc_sigmoid_rampup, dhc_soft_dice, dhc_weighted_ce
from dhc_reference import one_hot as _one_hot

from micd.methods import Batch, Progress, build_method
from micd.methods.cld import ConfidenceBank, sampling_mask
from micd.methods.losses import dice_ce, masked_cross_entropy
from micd.methods.weighting import DiffDW

C = 5  # classes, background included


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return _one_hot(labels, C)


class DHCDiffDW:
    """train_dhc.py DiffDW (accumulate_iters=50)."""

    def __init__(self, num_classes: int, accumulate_iters: int = 50) -> None:
        self.last_dice = torch.zeros(num_classes, dtype=torch.float64) + 1e-8
        self.cls_learn = torch.zeros(num_classes, dtype=torch.float64)
        self.cls_unlearn = torch.zeros(num_classes, dtype=torch.float64)
        self.dice_weight = torch.ones(num_classes, dtype=torch.float64)
        self.m = (accumulate_iters - 1) / accumulate_iters
        self.num_classes = num_classes

    def cal_weights(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        x_onehot = one_hot(pred.argmax(1)).double()
        y_onehot = one_hot(label).double()
        cur_dice = dhc_soft_dice(x_onehot, y_onehot, smooth=1e-8)  # do_bg=True: every class
        delta = cur_dice - self.last_dice
        learn = torch.where(delta > 0, delta, 0) * torch.log(cur_dice / self.last_dice)
        unlearn = torch.where(delta <= 0, delta, 0) * torch.log(cur_dice / self.last_dice)
        self.last_dice = cur_dice
        self.cls_learn = self.m * self.cls_learn + (1 - self.m) * learn
        self.cls_unlearn = self.m * self.cls_unlearn + (1 - self.m) * unlearn
        diff = ((self.cls_unlearn + 1e-8) / (self.cls_learn + 1e-8)) ** (1 / 5)
        self.dice_weight = self.m * self.dice_weight + (1 - self.m) * (1 - cur_dice)
        weights = diff * self.dice_weight
        return weights / weights.max() * self.num_classes


def batches(n: int, seed: int = 0, missing: tuple[int, ...] = (3, 4)):
    """Labelled logits and labels, several iterations; the classes ``missing`` never occur in the
    labels, and in some iterations not in the prediction either."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        labels = torch.randint(0, C - len(missing), (2, 4, 6, 6), generator=g)
        logits = torch.randn(2, C, 4, 6, 6, generator=g)
        if i % 2:  # the missing classes are not predicted either
            logits[:, list(missing)] -= 10
        yield logits, labels


def test_diffdw_is_dhcs_from_the_first_iteration_with_absent_classes_at_one_half():
    ours, reference = DiffDW(C), DHCDiffDW(C)
    for logits, labels in batches(6):
        expected = reference.cal_weights(logits, labels)
        weights = ours.update(logits, labels, torch.zeros(0))
        np.testing.assert_allclose(weights.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.last_dice.numpy(), reference.last_dice.numpy(), rtol=1e-6, atol=1e-9)
    # a class absent from both prediction and labels scores DHC's 0.5
    logits, labels = next(batches(2))
    logits[:, 4] -= 100
    assert ours.hard_dice(logits, labels)[4].item() == pytest.approx(0.5)


@pytest.mark.parametrize("weighted", [False, True])
def test_supervised_loss_has_dhcs_gradient_and_its_value_up_to_the_mean_weight(weighted):
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        labels = torch.randint(0, C - 1, (2, 4, 6, 6), generator=g)  # class C-1 absent
        weight = torch.rand(C, generator=g) * C if weighted else None
        ours_logits = torch.randn(2, C, 4, 6, 6, generator=g, requires_grad=True)
        dhc_logits = ours_logits.detach().clone().requires_grad_(True)
        ours = dice_ce(ours_logits, labels, weight)
        expected = dhc_dc_and_ce(dhc_logits, labels, weight)
        offset = 1.0 if weight is None else weight[1:].mean().item()  # ours: mean w (1 - dice)
        assert ours.item() == pytest.approx(expected.item() + offset, abs=1e-6)
        ours.backward()
        expected.backward()
        np.testing.assert_allclose(ours_logits.grad.numpy(), dhc_logits.grad.numpy(), atol=1e-6)


# ----- UA-MT: train_uamt.py -------------------------------------------------------------------


def fixed_noise(x: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """A deterministic stand-in for the Gaussian noise, so both sides see the same inputs."""
    return torch.clamp(torch.sin(x * 37.0) * std, -clip, clip)


def dhc_uamt_loss(student, teacher, image, label_l, epoch, max_epoch, cps_w):
    """One UA-MT iteration of train_uamt.py, its teacher in training mode (never .eval())."""
    b = label_l.shape[0]
    image_u = image[b:]
    ema_inputs = image_u + fixed_noise(image_u, 0.1, 0.2)
    outputs = student(image)
    outputs_soft = outputs.softmax(1)
    with torch.no_grad():
        ema_output = teacher(ema_inputs)
        volume_batch_r = image_u.repeat(2, 1, 1, 1, 1)
        stride = volume_batch_r.shape[0] // 2
        T = 8
        preds = torch.zeros([stride * T, C, *image_u.shape[2:]])
        for i in range(T // 2):
            preds[2 * stride * i : 2 * stride * (i + 1)] = teacher(
                volume_batch_r + fixed_noise(volume_batch_r, 0.1, 0.2)
            )
        preds = preds.softmax(1).reshape(T, stride, C, *image_u.shape[2:]).mean(0)
        uncertainty = -1.0 * torch.sum(preds * torch.log(preds + 1e-6), dim=1, keepdim=True)
    loss_ce = F.cross_entropy(outputs[:b], label_l)
    loss_dice = -dhc_soft_dice(outputs_soft[:b], one_hot(label_l), smooth=1e-8)[1:].mean()
    supervised = 0.5 * (loss_dice + loss_ce)
    distance = (outputs[b:].softmax(1) - ema_output.softmax(1)) ** 2
    threshold = (0.75 + 0.25 * dhc_sigmoid_rampup(epoch, max_epoch)) * np.log(2)
    mask = (uncertainty < threshold).float()
    consistency = torch.sum(mask * distance) / (2 * torch.sum(mask) + 1e-16)
    return supervised, consistency, supervised + cps_w * consistency


def dhc_update_ema(student, teacher, alpha, global_step):
    alpha = min(1 - 1 / (global_step + 1), alpha)
    with torch.no_grad():
        for ema_param, param in zip(teacher.parameters(), student.parameters()):
            ema_param.mul_(alpha).add_(param, alpha=1 - alpha)


def test_uamt_is_dhcs_train_uamt(monkeypatch):
    monkeypatch.setattr("micd.methods.mean_teacher.input_noise", fixed_noise)
    torch.manual_seed(0)
    # dropout 0: DHC's MC passes differ only by noise and batch statistics here, so both sides agree
    method = build_method("uamt", {}, C, n_filters=2, dropout=0.0).train()
    assert method.teacher.training  # DHC never puts its EMA model in eval mode
    g = torch.Generator().manual_seed(3)
    max_epochs = 10
    for iteration, epoch in enumerate([0, 0, 1, 4, 9]):
        image = torch.rand(4, 1, 16, 16, 16, generator=g)
        label = torch.randint(0, C - 1, (2, 16, 16, 16), generator=g)
        progress = Progress(epoch=epoch, max_epochs=max_epochs, iteration=iteration)
        cps_w = 0.1 * dhc_sigmoid_rampup(max(epoch - 1, 0), max_epochs)  # updated at the end of each epoch
        with torch.no_grad():
            sup, consistency, loss = dhc_uamt_loss(
                method.student, method.teacher, image, label, epoch, max_epochs, cps_w
            )
        terms = method.training_step(Batch(image=image, label=label), progress)
        assert terms.losses["sup"].item() == pytest.approx(sup.item() + 0.5, abs=1e-6)  # ours: 1 - dice, DHC's: -dice
        assert terms.losses["consistency"].item() == pytest.approx(consistency.item(), abs=1e-6)
        assert terms.losses["loss"].item() == pytest.approx(loss.item() + 0.5, abs=1e-6)
        with torch.no_grad():  # a student step, then both EMA updates from the same start
            for p in method.student.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        expected = [p.clone() for p in method.teacher.parameters()]
        reference = build_method("uamt", {}, C, n_filters=2, dropout=0.0).teacher
        with torch.no_grad():
            for r, e in zip(reference.parameters(), expected):
                r.copy_(e)
        dhc_update_ema(method.student, reference, 0.99, epoch)  # DHC passes the epoch as the step
        method.after_step(progress)
        for ours, theirs in zip(method.teacher.parameters(), reference.parameters()):
            np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), atol=1e-6)


# ----- CLD: train_cld.py ----------------------------------------------------------------------


class DHCConfidenceBank:
    """train_cld.py ConfidenceBank (momentum 0.999, update_iter 8)."""

    def __init__(self, confs: torch.Tensor, momentum: float = 0.999, update_iter: int = 8) -> None:
        self.confs = confs.clone()
        self.momentum, self.update_iter, self.tot_iter = momentum, update_iter, 0
        self.confs_all = torch.zeros(C)
        self.confs_cnt = torch.zeros(C)

    def record_data(self, output: torch.Tensor, label: torch.Tensor) -> None:
        scores = output.softmax(1)
        for ind in range(C):
            cat_mask = label == ind
            self.confs_all[ind] += torch.sum(scores[:, ind] * cat_mask)
            self.confs_cnt[ind] += torch.sum(cat_mask).float()
        self.tot_iter += 1
        if self.tot_iter % self.update_iter == 0:
            new_confs = self.confs_all / (self.confs_cnt + 1e-12)
            if self.tot_iter <= self.update_iter:
                self.confs = new_confs
            else:
                self.confs = self.confs * self.momentum + new_confs * (1 - self.momentum)
            self.confs_all = torch.zeros(C)
            self.confs_cnt = torch.zeros(C)


def dhc_sampling_rate(confs: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    rate = 1 - confs
    return (rate / (torch.max(rate) + 1e-12)) ** gamma


def test_cld_confidence_bank_sampling_rates_and_masked_loss_are_dhcs():
    initial = torch.rand(C, generator=torch.Generator().manual_seed(5))
    ours, reference = ConfidenceBank(initial, 0.999, 8), DHCConfidenceBank(initial)
    for logits, labels in batches(20, seed=2):
        ours.record(logits, labels)
        reference.record_data(logits, labels)
        np.testing.assert_allclose(ours.confidences.numpy(), reference.confs.numpy(), atol=1e-6)
        np.testing.assert_allclose(
            ours.sampling_rates(0.5).numpy(), dhc_sampling_rate(reference.confs).numpy(), atol=1e-6
        )
    assert ours.recorded.item() == 20
    g = torch.Generator().manual_seed(7)
    logits, target = torch.randn(2, C, 4, 6, 6, generator=g), torch.randint(0, C, (2, 4, 6, 6), generator=g)
    weight, mask = torch.rand(C, generator=g) * 3, (torch.rand(2, 4, 6, 6, generator=g) > 0.5).float()
    assert masked_cross_entropy(logits, target, mask, weight).item() == pytest.approx(
        dhc_weighted_ce(logits, target, mask, weight).item(), abs=1e-6
    )


def test_cld_keeps_a_voxel_with_its_predicted_classs_sampling_rate():
    rates = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0])
    logits = torch.zeros(1, C, 50, 50, 50)
    logits[0, :, :10] += torch.eye(C)[:, 0].reshape(C, 1, 1, 1) * 5  # slices 0-9 predicted class 0
    for c in range(1, C):
        logits[0, c, 10 * c : 10 * (c + 1)] += 5
    torch.manual_seed(0)
    kept = sampling_mask(logits, rates)
    for c in range(C):
        assert kept[0, 10 * c : 10 * (c + 1)].mean().item() == pytest.approx(rates[c].item(), abs=0.01)


def test_cld_step_is_dhcs_with_the_same_sampling_masks(monkeypatch):
    """The whole CLD loss over several iterations, masks drawn once and shared by both sides."""
    masks = []

    def recorded_mask(logits, rates):
        mask = (torch.rand(logits.argmax(1).shape) > 1 - rates[logits.argmax(1)]).float()
        masks.append(mask)
        return mask

    monkeypatch.setattr("micd.methods.cld.sampling_mask", recorded_mask)
    torch.manual_seed(0)
    method = build_method("cld", {}, C, n_filters=2, dropout=0.0).train()
    g = torch.Generator().manual_seed(4)
    labelled = torch.randint(0, C, (3, 16, 16, 16), generator=g)
    labelled[labelled == C - 1] = 0  # a rare class: C - 1 only in a few voxels of the third case
    labelled[2, :2, :2, :2] = C - 1
    counts = torch.bincount(labelled.flatten(), minlength=C).double()
    method.initialise(counts)
    weight = torch.from_numpy(np.power(counts.max().item() / counts.numpy(), 1 / 3)).float()
    np.testing.assert_allclose(method.weighting_a.weights.numpy(), weight.numpy(), rtol=1e-5)
    bank_a = DHCConfidenceBank(method.bank_a.confidences)
    bank_b = DHCConfidenceBank(method.bank_b.confidences)
    assert torch.equal(bank_a.confs, bank_b.confs)  # DHC: B starts from A's random confidences
    for iteration in range(10):
        image = torch.rand(4, 1, 16, 16, 16, generator=g)
        label = labelled[:2]
        masks.clear()
        terms = method.training_step(Batch(image=image, label=label), Progress(3, 10, iteration))
        with torch.no_grad():
            out_a, out_b = method.student_a(image), method.student_b(image)
        bank_a.record_data(out_a[:2], label)
        bank_b.record_data(out_b[:2], label)
        sup = dhc_dc_and_ce(out_a[:2], label, weight) + dhc_dc_and_ce(out_b[:2], label, weight)
        cross = dhc_weighted_ce(out_a, out_b.argmax(1), masks[0], weight) + dhc_weighted_ce(
            out_b, out_a.argmax(1), masks[1], weight
        )
        assert terms.losses["sup"].item() == pytest.approx(sup.item() + 2 * weight[1:].mean().item(), abs=1e-6)
        assert terms.losses["cps"].item() == pytest.approx(cross.item(), abs=1e-6)
        np.testing.assert_allclose(method.bank_a.confidences.numpy(), bank_a.confs.numpy(), atol=1e-6)
        np.testing.assert_allclose(method.bank_b.confidences.numpy(), bank_b.confs.numpy(), atol=1e-6)
        assert math.isfinite(terms.losses["loss"].item())


# ----- validation: data/transforms.py CenterCrop and the training scripts' Dice ---------------


def dhc_center_crop(item: np.ndarray, output_size: tuple[int, int, int]) -> np.ndarray:
    """data/transforms.py CenterCrop for a task other than synapse (one array)."""
    padding_flag = any(n <= p for n, p in zip(item.shape, output_size))
    if padding_flag:
        pw, ph, pd = (max((p - n) // 2 + 3, 0) for n, p in zip(item.shape, output_size))
    w, h, d = item.shape
    w1, h1, d1 = (int(round((n - p) / 2.0)) for n, p in zip((w, h, d), output_size))
    if padding_flag:
        item = np.pad(item, [(pw, pw), (ph, ph), (pd, pd)], mode="constant", constant_values=0)
    return item[w1 : w1 + output_size[0], h1 : h1 + output_size[1], d1 : d1 + output_size[2]]


@pytest.mark.parametrize("shape", [(20, 30, 31), (16, 30, 30), (16, 18, 40), (17, 21, 19)])
def test_validation_crop_is_dhcs_center_crop_padding_quirk_included(shape):
    from micd.evaluation.measures import dhc_centre_crop

    volume = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    patch = (16, 16, 16)
    np.testing.assert_array_equal(dhc_centre_crop(volume, patch), dhc_center_crop(volume, patch))
    with pytest.raises(ValueError, match="smaller than the validation patch"):
        dhc_centre_crop(volume, (32, 16, 16))


def test_validation_dice_is_dhcs_soft_dice_with_absent_classes_at_one_half():
    from micd.evaluation.measures import dhc_validation_dice

    g = torch.Generator().manual_seed(8)
    truth = torch.randint(0, C - 1, (6, 8, 8), generator=g)  # class C - 1 absent
    prediction = torch.randint(0, C - 2, (6, 8, 8), generator=g)  # C - 2 and C - 1 never predicted
    dice = dhc_soft_dice(one_hot(prediction[None]), one_hot(truth[None]), smooth=1e-8)[1:]
    assert dice[-1].item() == pytest.approx(0.5)
    assert dhc_validation_dice(prediction.numpy(), truth.numpy(), C) == pytest.approx(
        100 * dice.mean().item(), abs=1e-4
    )
