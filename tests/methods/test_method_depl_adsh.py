"""DePL and Adsh against DHC's ``code/train_depl.py`` and ``code/train_adsh.py``: one training step
of each on the tiny VNet, their mechanisms on hand-computed values, and over several iterations
against DHC's formulas written out below (each reference restates what the named lines compute)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_weighted_ce

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, scheduled_rampup, settings_from_dict
from micd.methods.depl_adsh import (
    AdaptiveThresholds,
    Adsh,
    ClassPrior,
    DePL,
    class_masked_cross_entropy,
)
from micd.methods.losses import dice_ce
from micd.nets import VNet

C = 5  # classes, background included
UNIFORM = (torch.ones(C), torch.ones(C))  # the class weights DePL and Adsh have: CPS's uniform ones


def build(cls, num_classes=C, **settings):
    """The method on the tiny VNet; ``bank_slots`` only reaches Adsh."""
    if cls is not Adsh:
        settings.pop("bank_slots", None)
    torch.manual_seed(0)
    network = functools.partial(VNet, num_classes, n_filters=2, dropout=0.0)
    return cls(settings_from_dict(cls.Settings, settings, cls.name), num_classes, network).train()


def tiny_batch(seed=0, n_labelled=2, n_unlabelled=2):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n_labelled + n_unlabelled, 1, 16, 16, 16, generator=g)
    label = torch.randint(0, C, (n_labelled, 16, 16, 16), generator=g)
    return Batch(image=image, label=label)


def biased_logits(g, batch=4, spatial=(3, 4, 4), scale=4.0, bias=2.0):
    """Confident logits leaning towards background, as an imbalanced data set's predictions do."""
    logits = torch.randn(batch, C, *spatial, generator=g) * scale
    logits[:, 0] += bias
    return logits


# ----- one training step ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DePL, Adsh])
def test_one_step_gives_finite_losses_and_gradients_in_both_networks(cls):
    method = build(cls)
    if cls is Adsh:
        method.initialise(torch.ones(C, dtype=torch.float64), 8)  # two slots
    assert method.settings.init_a == "kaiming" and method.settings.init_b == "xavier"
    assert method.teachers() == [] and set(method.students()) == {"student_a", "student_b"}
    batch = tiny_batch()
    progress = Progress(epoch=3, max_epochs=10, iteration=5)
    terms = method.training_step(batch, progress)
    assert set(terms.losses) == {"loss", "sup", "cps"} and set(terms.diagnostics) == {"beta"}
    assert all(torch.isfinite(v).all() for v in terms.losses.values())
    beta = scheduled_rampup(progress, None, 0.1)
    assert terms.diagnostics["beta"].item() == pytest.approx(beta)
    assert terms.losses["loss"].item() == pytest.approx(
        terms.losses["sup"].item() + beta * terms.losses["cps"].item(), rel=1e-6
    )
    terms.loss.backward()
    for net in method.students().values():
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    method.after_step(progress)
    method.eval()
    with torch.no_grad():
        expected = (method.student_a(batch.image) + method.student_b(batch.image)) / 2  # test.py --cps AB
        assert torch.allclose(method.predict(batch.image), expected)


@pytest.mark.parametrize("cls", [DePL, Adsh])
def test_supervised_term_is_unweighted_dice_ce_of_both_branches(cls):
    method = build(cls, bank_slots=2)
    batch = tiny_batch(seed=1)
    terms = method.training_step(batch, Progress(epoch=0, max_epochs=10, iteration=0))
    with torch.no_grad():  # the whole batch: BatchNorm normalises with its statistics
        p_a, p_b = method.student_a(batch.image)[:2], method.student_b(batch.image)[:2]
    expected = dice_ce(p_a, batch.label) + dice_ce(p_b, batch.label)
    assert terms.losses["sup"].item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("cls", [DePL, Adsh])
def test_state_survives_a_checkpoint_and_the_next_step_is_identical(cls):
    method = build(cls, bank_slots=3)
    for i in range(4):
        method.training_step(tiny_batch(seed=i), Progress(epoch=0, max_epochs=10, iteration=i))
    restored = build(cls)  # no bank size: the checkpoint's bank brings it
    restored.load_state_dict(method.state_dict())
    for name, buffer in method.state_dict().items():
        assert torch.equal(restored.state_dict()[name], buffer), name
    batch, progress = tiny_batch(seed=9), Progress(epoch=1, max_epochs=10, iteration=4)
    torch.manual_seed(1)
    expected = method.training_step(batch, progress)
    torch.manual_seed(1)
    resumed = restored.training_step(batch, progress)
    for name in expected.losses:
        assert torch.equal(resumed.losses[name], expected.losses[name]), name


# ----- DePL -------------------------------------------------------------------------------------


def dhc_causal_inference(logits, qhat, tau):
    """train_depl.py:136-140."""
    return F.softmax(logits - tau * torch.log(qhat), dim=1)


def dhc_update_qhat(probs, qhat, momentum):
    """train_depl.py:148-151."""
    return momentum * qhat + (1 - momentum) * probs.detach().mean(dim=0)


def dhc_depl_cross(out_a, out_b, qhat_a, qhat_b, n, tau=1.0, shifted=False):
    """train_depl.py:242-265: the cross loss and both updated qhat; ``shifted`` feeds the loss the
    marginally shifted unlabelled logits that lines 255-259 compute (DHC's loss does not)."""
    max_a, targets_a = torch.max(dhc_causal_inference(out_a.detach(), qhat_a, tau), dim=1)
    mask_a = max_a.ge(0.9).float()
    max_b, targets_b = torch.max(dhc_causal_inference(out_b.detach(), qhat_b, tau), dim=1)
    mask_b = max_b.ge(0.9).float()
    qhat_a = dhc_update_qhat(torch.softmax(out_a[n:].detach(), dim=1), qhat_a, 0.99)
    qhat_b = dhc_update_qhat(torch.softmax(out_b[n:].detach(), dim=1), qhat_b, 0.99)
    learner_a, learner_b = out_a, out_b
    if shifted:
        learner_a = torch.cat([out_a[:n], out_a[n:] + tau * torch.log(qhat_b)])
        learner_b = torch.cat([out_b[:n], out_b[n:] + tau * torch.log(qhat_a)])
    loss = dhc_weighted_ce(learner_a, targets_b, mask_b) + dhc_weighted_ce(learner_b, targets_a, mask_a)
    return loss, qhat_a, qhat_b, targets_a, mask_a


def test_depl_debiasing_and_its_confidence_mask_by_hand():
    prior = ClassPrior(3)
    logits = torch.log(torch.tensor([1.0, 90.0, 1.0])).view(1, 3, 1, 1, 1)
    # a uniform prior (DHC's start) changes nothing: 90/92 >= 0.9
    probs = prior.debiased_probabilities(logits, tau=1.0)
    assert prior.qhat.shape == (1, 3, 1, 1, 1) and torch.allclose(prior.qhat, torch.full_like(prior.qhat, 1 / 3))
    assert torch.allclose(probs.flatten(), torch.tensor([1 / 92, 90 / 92, 1 / 92]))
    # a prior leaning to class 1 takes its share back: 112.5 / 132.5 = 0.849 < 0.9, dropped
    prior.qhat = torch.tensor([0.1, 0.8, 0.1]).view(1, 3, 1, 1, 1)
    probs = prior.debiased_probabilities(logits, tau=1.0)
    assert probs.flatten()[1].item() == pytest.approx(112.5 / 132.5, abs=1e-6)
    # a prediction exactly as the prior is debiased to uniform
    probs = prior.debiased_probabilities(torch.log(prior.qhat) + 3.0, tau=1.0)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 3))
    # tau scales the correction: tau 0 is the plain softmax
    assert torch.allclose(prior.debiased_probabilities(logits, tau=0.0), logits.softmax(1))


def test_depl_qhat_update_and_marginal_shift_by_hand():
    prior = ClassPrior(3)
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]])
    logits = torch.log(probs).view(2, 3, 1, 1, 1)  # two unlabelled patches of one voxel
    prior.update(logits, momentum=0.99)
    expected = 0.99 / 3 + 0.01 * torch.tensor([0.6, 0.225, 0.175])
    assert torch.allclose(prior.qhat.flatten(), expected, atol=1e-7)
    assert torch.allclose(prior.logit_shift(1.0).flatten(), torch.log(expected), atol=1e-6)
    assert torch.allclose(prior.logit_shift(0.5).flatten(), 0.5 * torch.log(expected), atol=1e-6)


@pytest.mark.parametrize("shifted", [False, True])
def test_depl_cross_loss_is_dhcs_over_several_iterations(shifted):
    method = build(DePL, marginal_shift=shifted)
    g = torch.Generator().manual_seed(3)
    n = 2
    qhat_a = torch.ones(1, C, 3, 4, 4) / C  # train_depl.py:142-146
    qhat_b = torch.ones(1, C, 3, 4, 4) / C
    debiased_voxels = kept = 0
    for _ in range(8):
        out_a = biased_logits(g).requires_grad_()
        out_b = biased_logits(g).requires_grad_()
        batch = Batch(image=torch.zeros(4, 1, 3, 4, 4), label=torch.zeros(n, 3, 4, 4, dtype=torch.long))
        ours = method.cross_loss(batch, out_a, out_b, *UNIFORM)
        reference, qhat_a, qhat_b, targets_a, mask_a = dhc_depl_cross(out_a, out_b, qhat_a, qhat_b, n, shifted=shifted)
        assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
        np.testing.assert_allclose(method.prior_a.qhat.numpy(), qhat_a.numpy(), atol=1e-7)
        np.testing.assert_allclose(method.prior_b.qhat.numpy(), qhat_b.numpy(), atol=1e-7)
        grad_ours = torch.autograd.grad(ours, (out_a, out_b))
        grad_reference = torch.autograd.grad(reference, (out_a, out_b))
        for a, b in zip(grad_ours, grad_reference):
            assert torch.allclose(a, b, atol=1e-7)
        debiased_voxels += int((targets_a != out_a.argmax(1)).sum())
        kept += int(mask_a.sum())
    # the test exercised the mechanism: some pseudo-labels moved off the biased argmax, some voxels kept
    assert debiased_voxels > 0 and 0 < kept < 8 * out_a[:, 0].numel()


def test_depl_marginal_shift_off_leaves_the_loss_as_dhcs_unshifted_one():
    g = torch.Generator().manual_seed(5)
    out_a, out_b = biased_logits(g), biased_logits(g)
    batch = Batch(image=torch.zeros(4, 1, 3, 4, 4), label=torch.zeros(2, 3, 4, 4, dtype=torch.long))
    plain, shifted = build(DePL), build(DePL, marginal_shift=True)
    for method in (plain, shifted):  # move the priors off uniform first
        method.cross_loss(batch, biased_logits(g, bias=4.0), biased_logits(g, bias=4.0), *UNIFORM)
        method.cross_loss(batch, out_a, out_b, *UNIFORM)
    assert plain.cross_loss(batch, out_a, out_b, *UNIFORM).item() != pytest.approx(
        shifted.cross_loss(batch, out_a, out_b, *UNIFORM).item(), abs=1e-4
    )


# ----- Adsh -------------------------------------------------------------------------------------


class DHCAdsh:
    """train_adsh.py:140-201, the ADSH class with thresh_major 0.9 and tot_iter slots."""

    def __init__(self, num_cls, tot_iter, spatial, thresh_major=0.9):
        self.num_cls, self.tot_iter, self.thresh_major = num_cls, tot_iter, thresh_major
        self.scores = torch.zeros(tot_iter, num_cls, *spatial).float()
        self.cur_iter = 0
        self.thresholds = torch.zeros(num_cls).float()

    def cal_weight(self, scores):
        winners = torch.argmax(scores.detach(), dim=1, keepdim=True).long()
        weight = np.zeros(self.num_cls)
        for i in range(scores.shape[0]):
            counts, _ = np.histogram(winners[i].numpy().reshape(-1), range(self.num_cls + 1))
            weight += counts
        weight = torch.FloatTensor(weight)
        return weight, torch.argmax(weight, keepdim=True)

    def get_thresholds(self, output):
        bsz = output.shape[0]
        if self.cur_iter < self.tot_iter - 1:
            self.scores[self.cur_iter : self.cur_iter + bsz] = F.softmax(output.detach(), dim=1)
            self.cur_iter += bsz
            return self.thresholds
        b, c = self.scores.shape[0], self.scores.shape[1]
        scores = self.scores.view(b, c, -1)
        voxel_num, majority_cls = self.cal_weight(scores)
        score_major = scores[:, majority_cls].squeeze()
        scores_thresh = torch.where(score_major > self.thresh_major, 1.0, 0.0)
        rho = (torch.sum(scores_thresh) + 1e-8) / (voxel_num[majority_cls] + 1e-8)
        scores_stack = torch.cat([scores[t] for t in range(b)], dim=-1)
        for i in range(self.num_cls):
            sort_scores, _ = torch.sort(scores_stack[i], dim=0, descending=True)
            self.thresholds[i] = sort_scores[int(rho * voxel_num[i])]
        self.cur_iter = 0
        return self.thresholds

    def cal_sampling_mask(self, output, thresholds):
        confidence_map = F.softmax(output.detach(), dim=1)
        sample_map = torch.zeros_like(output).float()
        for idx in range(self.num_cls):
            sample_map[:, idx] = (confidence_map[:, idx] > thresholds[idx]) * 1.0
        return sample_map


def dhc_class_dependent_ce(logits, target, weight_map):
    """utils/loss.py ClassDependent_WeightedCrossEntropyLoss: CE of input * map, reduction 'none', mean."""
    loss = F.cross_entropy(logits * weight_map.detach(), target, reduction="none")
    return torch.mean(loss.view(logits.shape[0], -1))


def test_adsh_thresholds_and_sampling_mask_by_hand():
    bank = AdaptiveThresholds(3, majority_threshold=0.9)
    # two unlabelled patches of 1x1x4 voxels, probabilities (class 0, 1, 2) per voxel
    patch_0 = [[0.95, 0.03, 0.02], [0.92, 0.05, 0.03], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]
    patch_1 = [[0.97, 0.02, 0.01], [0.5, 0.1, 0.4], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]
    probs = torch.tensor([patch_0, patch_1]).permute(0, 2, 1).reshape(2, 3, 1, 1, 4)
    thresholds = bank.update(probs, slots=3)  # 3 slots: the first call fills two, the next computes
    assert bank.scores.shape == (3, 3, 1, 1, 4) and int(bank.filled) == 2
    assert torch.equal(thresholds, torch.zeros(3))  # DHC starts at 0: every probability passes
    assert torch.equal(bank.sampling_mask(probs), torch.ones_like(probs))
    thresholds = bank.update(torch.rand(2, 3, 1, 1, 4), slots=3)  # not filed: recomputes from the bank
    assert int(bank.filled) == 0
    # votes over 12 voxels, the unfilled slot's 4 zero maps for background: N = (9, 2, 1); majority 0,
    # 3 of its 9 voxels above 0.9: rho = 1/3; ranks int(rho N) = (3, 0, 0) of each class's scores, descending
    assert torch.allclose(thresholds, torch.tensor([0.6, 0.7, 0.7]))
    voxels = torch.tensor([[0.65, 0.25, 0.1], [0.1, 0.75, 0.15], [0.5, 0.1, 0.71]]).T.reshape(1, 3, 1, 1, 3)
    expected = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]).T.reshape(1, 3, 1, 1, 3)
    assert torch.equal(bank.sampling_mask(voxels), expected)
    bank.update(probs, slots=3)  # filling again from the first slot
    assert int(bank.filled) == 2 and torch.equal(bank.scores[:2], probs)


def test_adsh_loss_masks_classes_not_voxels():
    logits = torch.tensor([2.0, 1.0, 0.0]).view(1, 3, 1, 1, 1)
    mask = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1)
    loss = class_masked_cross_entropy(logits, torch.tensor([1]).view(1, 1, 1, 1), mask)
    assert loss.item() == pytest.approx(math.log(math.exp(2) + 2), abs=1e-6)  # logits (2, 0, 0), target 1


def test_adsh_bank_size_comes_from_the_unlabelled_cases():
    method = build(Adsh)
    with pytest.raises(SettingsError, match="bank_slots"):
        method.training_step(tiny_batch(), Progress(0, 10, 0))
    method.initialise(torch.ones(C, dtype=torch.float64), 17)  # DHC: tot_iter = u_len // 4
    method.training_step(tiny_batch(), Progress(0, 10, 0))
    assert method.thresholds_a.scores.shape == (4, C, 16, 16, 16)
    fixed = build(Adsh, bank_slots=2)
    fixed.initialise(torch.ones(C, dtype=torch.float64), 100)  # an explicit bank_slots wins
    assert fixed.bank_slots == 2


@pytest.mark.parametrize("slots", [4, 5, 1])
def test_adsh_cross_loss_and_thresholds_are_dhcs_over_several_iterations(slots):
    """4 slots: thresholds every third iteration; 5: one slot never filled; 1: every iteration, from zeros."""
    method = build(Adsh, bank_slots=slots)
    spatial, n = (3, 4, 4), 2
    adsh_a, adsh_b = DHCAdsh(C, slots, spatial), DHCAdsh(C, slots, spatial)
    g = torch.Generator().manual_seed(11)
    changed = masked = 0
    for _ in range(12):
        out_a = biased_logits(g, spatial=spatial, scale=2.0).requires_grad_()
        out_b = biased_logits(g, spatial=spatial, scale=2.0).requires_grad_()
        batch = Batch(image=torch.zeros(4, 1, *spatial), label=torch.zeros(n, *spatial, dtype=torch.long))
        ours = method.cross_loss(batch, out_a, out_b, *UNIFORM)
        max_a, max_b = torch.argmax(out_a.detach(), dim=1), torch.argmax(out_b.detach(), dim=1)
        thresholds_a = adsh_a.get_thresholds(out_a[n:].detach())
        thresholds_b = adsh_b.get_thresholds(out_b[n:].detach())
        map_a = adsh_a.cal_sampling_mask(out_a.detach(), thresholds_a)
        map_b = adsh_b.cal_sampling_mask(out_b.detach(), thresholds_b)
        reference = dhc_class_dependent_ce(out_a, max_b, map_b) + dhc_class_dependent_ce(out_b, max_a, map_a)
        assert torch.equal(method.thresholds_a.thresholds, thresholds_a)
        assert torch.equal(method.thresholds_b.thresholds, thresholds_b)
        assert torch.equal(method.thresholds_a.scores, adsh_a.scores)
        assert int(method.thresholds_a.filled) == adsh_a.cur_iter
        assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
        grad_ours = torch.autograd.grad(ours, (out_a, out_b))
        grad_reference = torch.autograd.grad(reference, (out_a, out_b))
        for a, b in zip(grad_ours, grad_reference):
            assert torch.allclose(a, b, atol=1e-7)
        changed += int((thresholds_a > 0).any())
        masked += int((map_b == 0).sum())
    if slots > 1:  # the test exercised the mechanism: thresholds moved and masked some classes out
        assert changed > 0 and masked > 0
