"""URPC (DHC's ``code/train_urpc.py`` on ``models/unet_ds.py``) and Basak et al. (``code/train_acisis.py``)
against DHC's formulas, restated below on small tensors: each ``dhc_*`` function or class says
what the named DHC file computes, and ours must agree to 1e-6, over several iterations where the
method keeps state."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_dc_and_ce, dhc_sigmoid_rampup, dhc_soft_dice, dhc_weighted_ce
from dhc_reference import one_hot as _one_hot

from micd.methods.acisis import ACISIS, ClassIndicators, sampling_weights
from micd.methods.base import Batch, Progress, settings_from_dict
from micd.methods.losses import masked_cross_entropy
from micd.methods.urpc import URPC, rectified_consistency
from micd.nets import VNet, count_parameters
from micd.nets.unet_ds import UNetDS

C = 5  # classes, background included


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return _one_hot(labels, C)


def build(cls, n_filters=2, **settings):
    network = functools.partial(VNet, C, n_filters=n_filters, dropout=0.0)
    return cls(settings_from_dict(cls.Settings, settings, cls.name), C, network)


def random_batch(g: torch.Generator, size: int, n_labelled: int = 2, n_unlabelled: int = 2, classes: int = C):
    image = torch.rand(n_labelled + n_unlabelled, 1, size, size, size, generator=g)
    label = torch.randint(0, classes, (n_labelled, size, size, size), generator=g)
    return Batch(image=image, label=label)


# ----- the UNet -------------------------------------------------------------------------------


def test_unet_gives_logits_of_the_input_shape_in_eval_mode():
    torch.manual_seed(0)
    net = UNetDS(C, width=2).eval()
    for shape in [(1, 1, 32, 32, 32), (2, 1, 16, 32, 48)]:
        x = torch.rand(shape)
        with torch.no_grad():
            logits = net(x)
            again = net(x)
            main, auxiliary = net(x, return_auxiliary=True)
        assert logits.shape == (shape[0], C, *shape[2:])
        assert torch.equal(logits, again)  # eval: no dropout, instance norm needs no running statistics
        assert torch.equal(logits, main)
        assert [a.shape for a in auxiliary] == [logits.shape] * 3
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.rand(1, 1, 24, 32, 32))


def test_unet_has_dhcs_layout_and_parameter_count():
    net = UNetDS(16)  # DHC's unet_3D_ds(n_classes=16, in_channels=1): feature_scale 4
    assert count_parameters(net) == 5_887_920  # the same count as DHC's model (checked against its code)
    assert [stage[0].out_channels for stage in net.encoder] == [16, 32, 64, 128, 256]
    assert [stage[0].in_channels for stage in net.decoder] == [256 + 128, 128 + 64, 64 + 32, 32 + 16]
    assert [d.p for d in net.dropout] == [0.5, 0.3, 0.2, 0.1]
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    assert all(
        not m.affine and not m.track_running_stats for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)
    )
    weight = net.encoder[3][0].weight  # Kaiming normal, fan-in: std sqrt(2 / fan_in)
    assert weight.std().item() == pytest.approx(math.sqrt(2 / weight[0].numel()), rel=0.02)


# ----- URPC -----------------------------------------------------------------------------------


def test_urpc_takes_half_the_configured_width_unless_set():
    assert build(URPC, n_filters=32).net.encoder[0][0].out_channels == 16  # DHC's width at the protocol's 32
    assert build(URPC, n_filters=2).net.encoder[0][0].out_channels == 1
    assert build(URPC, n_filters=2, width=3).net.encoder[0][0].out_channels == 3


def test_urpc_step_gives_finite_losses_and_gradients_in_its_one_network():
    torch.manual_seed(0)
    method = build(URPC).train()
    assert list(method.students()) == ["net"] and method.teachers() == []
    batch = random_batch(torch.Generator().manual_seed(1), 32)
    terms = method.training_step(batch, Progress(epoch=3, max_epochs=10, iteration=5))
    assert set(terms.losses) == {"loss", "sup", "consistency"} and set(terms.diagnostics) == {"beta"}
    assert all(torch.isfinite(v) for v in terms.losses.values())
    terms.loss.backward()
    grads = [p.grad for p in method.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every head is trained
    assert method.eval().predict(batch.image).shape == (4, C, 32, 32, 32)


def dhc_urpc_consistency(outputs: list[torch.Tensor], b: int) -> torch.Tensor:
    """train_urpc.py:250-291 on the four heads' logits (the whole batch), b labelled cases first."""
    kl_distance = torch.nn.KLDivLoss(reduction="none")
    soft = [torch.softmax(o, dim=1) for o in outputs]
    preds = (soft[0] + soft[1] + soft[2] + soft[3]) / 4
    losses = []
    for s in soft:
        variance = torch.sum(kl_distance(torch.log(s[b:]), preds[b:]), dim=1, keepdim=True)
        exp_variance = torch.exp(-variance)
        distance = (preds[b:] - s[b:]) ** 2
        losses.append(torch.mean(distance * exp_variance) / (torch.mean(exp_variance) + 1e-8) + torch.mean(variance))
    return (losses[0] + losses[1] + losses[2] + losses[3]) / 4


def dhc_urpc_supervised(outputs: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """train_urpc.py:229-248: (four CE + four SoftDice(smooth=1e-8) losses) / 8 on the labelled cases."""
    b = label.shape[0]
    ce = [F.cross_entropy(o[:b], label) for o in outputs]
    dice = [-dhc_soft_dice(o[:b].softmax(1), one_hot(label), smooth=1e-8)[1:].mean() for o in outputs]
    return (sum(ce) + sum(dice)) / 8


def test_rectified_consistency_by_hand_on_one_voxel():
    """Two heads, two classes, one unlabelled voxel: p1 = (0.8, 0.2), p2 = (0.4, 0.6)."""
    p1, p2 = [0.8, 0.2], [0.4, 0.6]
    m = [(a + b) / 2 for a, b in zip(p1, p2)]  # (0.6, 0.4)
    expected = 0.0
    for p in (p1, p2):
        v = sum(mc * math.log(mc / pc) for mc, pc in zip(m, p))  # KL(m || p)
        w = math.exp(-v)
        expected += sum((mc - pc) ** 2 for mc, pc in zip(m, p)) / 2 * w / (w + 1e-8) + v
    expected /= 2
    probs = [torch.tensor(p).reshape(1, 2, 1, 1, 1) for p in (p1, p2)]
    assert rectified_consistency(probs).item() == pytest.approx(expected, abs=1e-7)
    # heads that agree: no variance, no distance
    assert rectified_consistency([probs[0], probs[0].clone()]).item() == pytest.approx(0.0, abs=1e-7)


def test_rectified_consistency_is_dhcs_in_value_and_gradient():
    """Nothing is detached in DHC: the mean, the KL weights and their normalisation carry gradients."""
    g = torch.Generator().manual_seed(2)
    logits = [(torch.randn(4, C, 4, 4, 4, generator=g) * 2).requires_grad_() for _ in range(4)]
    ours = rectified_consistency([o[2:].softmax(1) for o in logits])
    theirs = dhc_urpc_consistency(logits, 2)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    ours_grads = torch.autograd.grad(ours, logits)
    theirs_grads = torch.autograd.grad(theirs, logits)
    for a, b in zip(ours_grads, theirs_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7)


def test_urpc_step_is_dhcs_train_urpc():
    torch.manual_seed(0)
    method = build(URPC, dropout=[0.0] * 4).train()  # no dropout: both sides see the same heads
    g = torch.Generator().manual_seed(3)
    max_epochs = 10
    for iteration, epoch in enumerate([0, 1, 2, 6, 10]):
        batch = random_batch(g, 32)
        terms = method.training_step(batch, Progress(epoch=epoch, max_epochs=max_epochs, iteration=iteration))
        with torch.no_grad():
            main, auxiliary = method.net(batch.image, return_auxiliary=True)
            outputs = [main, *auxiliary]  # DHC's outputs_aux1 .. outputs_aux4
            sup = dhc_urpc_supervised(outputs, batch.label)
            consistency = dhc_urpc_consistency(outputs, 2)
        cps_w = 0.1 * dhc_sigmoid_rampup(max(epoch - 1, 0), max_epochs)  # -w 0.1 -r, updated at the end of each epoch
        assert terms.diagnostics["beta"].item() == pytest.approx(cps_w)
        assert terms.losses["sup"].item() == pytest.approx(sup.item() + 0.5, abs=1e-6)  # ours 1 - dice, DHC's -dice
        assert terms.losses["consistency"].item() == pytest.approx(consistency.item(), abs=1e-6)
        assert terms.losses["loss"].item() == pytest.approx(sup.item() + 0.5 + cps_w * consistency.item(), abs=1e-6)


# ----- Basak et al. (acisis) ------------------------------------------------------------------


class DHCConfidenceArray:
    """train_acisis.py:155-285 ConfidenceArray, on the CPU. ``gt`` is (B, 1, D, H, W), as
    ``fetch_data`` gives it, so the indicators broadcast over pairs of cases."""

    def __init__(self, num_cls: int, momentum: float = 0.99, update_iter: int = 1, top_m: int = 12) -> None:
        self.num_cls, self.momentum, self.tot_iter, self.cur_iter = num_cls, momentum, update_iter, 0
        self.entropy, self.confidence, self.variance = (torch.zeros(num_cls) for _ in range(3))
        self.CC = torch.zeros(num_cls)
        self.top_m, self.P_CCF, self.P_FR, self.lambda_ = top_m, 0.0, 0.632, 2.5
        self.sam_rate = torch.ones(num_cls)

    def record_data(self, output: torch.Tensor, gt: torch.Tensor) -> None:
        scores = F.softmax(output, dim=1)
        scores_max = scores.max(dim=1).values
        for k in range(self.num_cls):
            p_k = scores[:, k]
            n_k = (gt == k).sum() + 1e-12
            self.entropy[k] += torch.sum(p_k.unsqueeze(1) * torch.log(scores + 1e-12) * (gt == k).unsqueeze(1)) / n_k
            self.confidence[k] += torch.sum(p_k * (gt == k)) / n_k
            self.variance[k] += torch.sum((scores_max - p_k) * (gt == k)) / n_k
        self.cur_iter += 1

    def fuzzy_rank(self, cf: np.ndarray, top: int) -> np.ndarray:
        r_l = np.zeros(cf.shape)
        for i in range(cf.shape[0]):
            for k in range(cf.shape[1]):
                r_l[i][k] = 1 - math.exp(-math.exp(-2.0 * cf[i][k]))
        k_l = self.P_FR * np.ones(r_l.shape)
        for i in range(r_l.shape[0]):
            for k in range(top):
                idx = np.where(r_l[i] == np.partition(r_l[i], k)[k])
                k_l[i][idx] = r_l[i][idx]
        return k_l

    def cfs(self, cf: np.ndarray, k_l: np.ndarray) -> np.ndarray:
        for f in range(cf.shape[0]):
            cf[f][np.where(k_l[f] == self.P_FR)] = self.P_CCF
        return 1 - np.sum(cf, axis=0) / cf.shape[0]

    def cal_sampling_rate(self) -> torch.Tensor:
        if self.cur_iter == self.tot_iter:
            confs = torch.stack([self.entropy, self.confidence, self.variance], dim=0)
            r_norm = F.softmax(confs / self.cur_iter, dim=1).numpy()
            ranks = self.fuzzy_rank(r_norm, self.top_m)
            cur_cc = torch.FloatTensor(self.cfs(r_norm.copy(), ranks) * ranks.sum(0))
            cur_cc = cur_cc / cur_cc.max()
            self.CC = self.momentum * self.CC + (1 - self.momentum) * cur_cc
            self.entropy, self.confidence, self.variance = (torch.zeros(self.num_cls) for _ in range(3))
            self.cur_iter = 0
            sam_rate = 1 - self.CC
            self.sam_rate = torch.pow(sam_rate / (sam_rate.max() + 1e-12), self.lambda_)
        return self.sam_rate


def dhc_sampling_mask(output: torch.Tensor, sam_rate: torch.Tensor, uniform: torch.Tensor, min_sr: float = 0.0):
    """train_acisis.py:287-301 cal_sampling_mask (beta 1.5), its per-class torch.rand draws replaced
    by one shared ``uniform``: each voxel reads only the draw of its predicted class."""
    pred_map = torch.argmax(output, dim=1)
    pred_map_max = torch.softmax(output, dim=1).max(dim=1).values
    sample_map = torch.zeros_like(pred_map).float()
    for idx in range(C):
        prob = 1 - sam_rate[idx]
        if idx >= 1 and prob > 1 - min_sr:
            prob = 1 - min_sr
        sample_map += ((uniform * (pred_map == idx)) > prob).float()
    return sample_map * torch.pow(pred_map_max, 1.5)


def labelled_logits(n_iterations: int, seed: int = 0):
    """Logits and labels of 2 labelled cases; class 4 missing from some iterations, class 3 rare."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n_iterations):
        label = torch.randint(0, C - 1, (2, 4, 6, 6), generator=g)
        label[0, 0, 0, :2] = 3
        if i % 3:
            label[1, :2, :3, :3] = 4
        logits = torch.randn(2, C, 4, 6, 6, generator=g) * 2 + one_hot(label) * (i % 4)
        yield logits, label


def bank(top: int = 12, all_pairs: bool = True) -> ClassIndicators:
    return ClassIndicators(C, 0.99, top, 0.632, 0.0, 2.5, all_pairs)


@pytest.mark.parametrize("top", [3, 12])
def test_class_indicators_and_rates_are_dhcs_confidence_array(top):
    """Three pooling periods of 4 iterations; DHC's np.partition needs top <= C, where a larger top keeps all."""
    ours, reference = bank(top), DHCConfidenceArray(C, update_iter=4, top_m=min(top, C))
    for i, (logits, label) in enumerate(labelled_logits(12)):
        ours.record(logits, label)
        reference.record_data(logits, label.unsqueeze(1))
        pooled = torch.stack([reference.entropy, reference.confidence, reference.variance])
        if reference.cur_iter:
            np.testing.assert_allclose(ours.indicators.numpy(), pooled.numpy(), rtol=1e-5, atol=1e-6)
        rates = reference.cal_sampling_rate()
        if (i + 1) % 4 == 0:
            ours.refresh()
        np.testing.assert_allclose(ours.score.numpy(), reference.CC.numpy(), atol=1e-6)
        np.testing.assert_allclose(ours.rates.numpy(), rates.numpy(), atol=1e-6)
    assert not torch.allclose(ours.rates, torch.ones(C))  # the rates moved away from their start


def test_indicators_pair_every_labelled_case_with_every_case_unless_told_not_to():
    logits, label = next(labelled_logits(1, seed=5))
    paired, matched, reference = bank(), bank(all_pairs=False), DHCConfidenceArray(C)
    paired.record(logits, label)
    matched.record(logits, label)
    reference.record_data(logits, label.unsqueeze(1))  # DHC: (B, 1, ...) labels, every pair
    np.testing.assert_allclose(paired.indicators[1].numpy(), reference.confidence.numpy(), rtol=1e-5)
    per_case = torch.stack(  # the confidence with each case's own labels
        [(logits.softmax(1)[:, k] * (label == k)).sum() / (label == k).sum().clamp_min(1) for k in range(C)]
    )
    np.testing.assert_allclose(matched.indicators[1].numpy(), per_case.numpy(), rtol=1e-5)
    assert not torch.allclose(paired.indicators[1], matched.indicators[1])
    single = bank()  # one labelled case: both readings agree
    single.record(logits[:1], label[:1])
    lone = bank(all_pairs=False)
    lone.record(logits[:1], label[:1])
    np.testing.assert_allclose(single.indicators.numpy(), lone.indicators.numpy(), rtol=1e-6)


@pytest.mark.parametrize("min_rate", [0.0, 0.3])
def test_sampling_weights_are_dhcs_sampling_mask(min_rate):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, C, 4, 6, 6, generator=g) * 3
    rates = torch.tensor([0.2, 1.0, 0.0, 0.5, 0.05])
    uniform = torch.rand(2, 4, 6, 6, generator=g)
    ours = sampling_weights(logits, rates, 1.5, min_rate, uniform=uniform)
    np.testing.assert_allclose(ours.numpy(), dhc_sampling_mask(logits, rates, uniform, min_rate).numpy(), atol=1e-7)
    # keep rate by predicted class, on many voxels
    logits = torch.zeros(1, C, 50, 50, 50)
    for c in range(C):
        logits[0, c, 10 * c : 10 * (c + 1)] += 5
    torch.manual_seed(0)
    kept = sampling_weights(logits, rates, 0.0, min_rate)  # power 0: the weight is the keep draw
    for c in range(C):
        expected = max(rates[c].item(), min_rate) if c else rates[0].item()
        assert kept[0, 10 * c : 10 * (c + 1)].mean().item() == pytest.approx(expected, abs=0.01)
    target = torch.randint(0, C, (2, 4, 6, 6), generator=g)
    weights = torch.rand(2, 4, 6, 6, generator=g)
    logits = torch.randn(2, C, 4, 6, 6, generator=g)
    assert masked_cross_entropy(logits, target, weights).item() == pytest.approx(
        dhc_weighted_ce(logits, target, weights).item(), abs=1e-7
    )


def test_acisis_step_gives_finite_losses_and_gradients_in_the_student_only():
    torch.manual_seed(0)
    method = build(ACISIS).train()
    assert list(method.students()) == ["student"] and method.teachers() == [method.teacher]
    assert method.teacher.training  # DHC's EMA model stays in training mode
    # drawn apart (DHC initialises its EMA model on its own)
    assert not torch.equal(method.teacher.head.weight, method.student.head.weight)
    batch = random_batch(torch.Generator().manual_seed(1), 16)
    progress = Progress(epoch=0, max_epochs=10, iteration=0)
    terms = method.training_step(batch, progress)
    assert set(terms.losses) == {"loss", "sup", "pseudo"} and set(terms.diagnostics) == {"beta"}
    assert all(torch.isfinite(v) for v in terms.losses.values())
    terms.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    method.after_step(progress)  # epoch 0: the EMA's decay is 0, the teacher becomes the student
    for t, s in zip(method.teacher.parameters(), method.student.parameters()):
        assert torch.equal(t, s)
    assert method.eval().predict(batch.image).shape == (4, C, 16, 16, 16)
    assert not method.teacher.training


@dataclass
class EpochProgress(Progress):
    iterations_per_epoch: int = 0


def test_acisis_steps_are_dhcs_train_acisis(monkeypatch):
    """Three epochs of 2 iterations: losses, rates, pseudo-labels and the EMA as DHC's loop, the
    sampling draws recorded and shared by both sides, the rates refreshed at each epoch's last iteration."""
    draws = []

    def recorded(logits, rates, power, min_rate=0.0, uniform=None):
        draws.append(torch.rand(logits.argmax(1).shape))
        return sampling_weights(logits, rates, power, min_rate, uniform=draws[-1])

    monkeypatch.setattr("micd.methods.acisis.sampling_weights", recorded)
    torch.manual_seed(0)
    method = build(ACISIS, top_classes=3).train()
    reference = DHCConfidenceArray(C, momentum=0.99, update_iter=2, top_m=3)
    g = torch.Generator().manual_seed(4)
    max_epochs, per_epoch = 10, 2
    for iteration in range(6):
        epoch = iteration // per_epoch
        progress = EpochProgress(epoch, max_epochs, iteration, iterations_per_epoch=per_epoch)
        batch = random_batch(g, 16)
        with torch.no_grad():  # both in training mode: batch statistics, as the step sees them
            out = method.student(batch.image)
            pseudo_label = method.teacher(batch.image[2:]).argmax(1)
        terms = method.training_step(batch, progress)
        reference.record_data(out[:2], batch.label.unsqueeze(1))
        rates = reference.cal_sampling_rate()
        sample_map = dhc_sampling_mask(out[2:], rates, draws[-1])
        sup = dhc_dc_and_ce(out[:2], batch.label)
        pseudo = dhc_weighted_ce(out[2:], pseudo_label, sample_map)
        cps_w = 0.1 * dhc_sigmoid_rampup(max(epoch - 1, 0), max_epochs)
        assert terms.losses["sup"].item() == pytest.approx(sup.item() + 1, abs=1e-6)  # ours 1 - dice, DHC's -dice
        assert terms.losses["pseudo"].item() == pytest.approx(pseudo.item(), abs=1e-6)
        assert terms.losses["loss"].item() == pytest.approx(sup.item() + 1 + cps_w * pseudo.item(), abs=1e-6)
        np.testing.assert_allclose(method.indicators.rates.numpy(), rates.numpy(), atol=1e-6)
        with torch.no_grad():  # a student step, then the EMA with the epoch as its step, parameters only
            for p in method.student.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
            alpha = min(1 - 1 / (epoch + 1), 0.99)
            expected = [
                alpha * t + (1 - alpha) * s for t, s in zip(method.teacher.parameters(), method.student.parameters())
            ]
        method.after_step(progress)
        for ours, theirs in zip(method.teacher.parameters(), expected):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    assert not torch.allclose(method.indicators.rates, torch.ones(C))


def test_acisis_without_the_epochs_length_refreshes_at_the_next_epochs_first_iteration():
    """Progress without ``iterations_per_epoch``: the same pooled epoch, one iteration later."""
    torch.manual_seed(0)
    method = build(ACISIS, top_classes=3).train()
    reference = DHCConfidenceArray(C, update_iter=2, top_m=3)
    g = torch.Generator().manual_seed(8)
    for iteration in range(5):
        epoch = iteration // 2
        batch = random_batch(g, 16)
        with torch.no_grad():
            out = method.student(batch.image)
        before = reference.sam_rate.clone()
        method.training_step(batch, Progress(epoch, 10, iteration))
        reference.record_data(out[:2], batch.label.unsqueeze(1))
        after = reference.cal_sampling_rate()
        if iteration % 2 == 1:  # DHC refreshes here; we still sample with the rates before
            np.testing.assert_allclose(method.indicators.rates.numpy(), before.numpy(), atol=1e-6)
            assert not torch.allclose(after, before)
        else:
            np.testing.assert_allclose(method.indicators.rates.numpy(), after.numpy(), atol=1e-6)
    assert int(method.indicators.recorded) == 1 and int(method.recorded_epoch) == 2
    state = method.state_dict()  # the pooled statistics travel with a checkpoint
    assert {
        "indicators.indicators",
        "indicators.recorded",
        "indicators.score",
        "indicators.rates",
        "recorded_epoch",
    } <= set(state)
