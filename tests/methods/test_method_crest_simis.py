"""CReST and SimiS against DHC's ``code/train_crest.py`` and ``code/train_simis.py``: their class
weightings against the scripts' formulas written out below (numpy, as the scripts compute them),
over several iterations with classes missing from the batch, and one whole training step
against DHC's losses."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_dc_and_ce

from micd.methods import Batch, Progress
from micd.methods.base import settings_from_dict
from micd.methods.rebalancing import CReST, CReSTWeighting, SimiS, SimiSWeighting
from micd.nets import VNet

C = 5  # classes, background included


def build(cls, num_classes: int = C, **settings):
    torch.manual_seed(0)
    network = functools.partial(VNet, num_classes, n_filters=2, dropout=0.0)
    return cls(settings_from_dict(cls.Settings, settings, cls.name), num_classes, network)


def tiny_batch(num_classes: int = C, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 1, 16, 16, 16, generator=g)
    label = torch.randint(0, num_classes, (2, 16, 16, 16), generator=g)
    return Batch(image=image, label=label)


# ----- DHC's formulas, restated ---------------------------------------------------------------


def dhc_histogram(pred_or_label: np.ndarray, num_classes: int) -> np.ndarray:
    """``_cal_class_num`` / ``init_*_weight``: np.histogram per case over bins 0..C."""
    counts = np.zeros(num_classes)
    for case in pred_or_label:
        counts += np.histogram(case.reshape(-1), range(num_classes + 1))[0]
    return counts


def dhc_crest_weights(counts: np.ndarray) -> np.ndarray:
    """train_crest.py ``CReST._weight_wbg``: mu sorted (stable, largest first) into a dict, then the
    class at rank l gets the mu at rank C - 1 - l."""
    num_classes = len(counts)
    mu = np.power((counts + 1e-8) / (np.amax(counts) + 1e-8), 1 / 3)
    ranked = list(
        dict(sorted(dict(zip(range(num_classes), list(mu))).items(), key=lambda s: s[1], reverse=True)).items()
    )
    weight = np.zeros(num_classes)
    for rank in range(num_classes):
        weight[ranked[rank][0]] = ranked[num_classes - 1 - rank][1]
    return weight


def dhc_simis_weights(counts: np.ndarray) -> np.ndarray:
    """train_simis.py ``SimiS._weight_wbg``, times C as ``init_weight`` and ``cal_cur_weight`` do."""
    p = (counts + 1e-8) / (np.sum(counts) + 1e-8)
    return (np.max(p) - p) * len(counts)


def dhc_ema(cur: np.ndarray, past: np.ndarray, momentum: float = 0.99) -> np.ndarray:
    """utils/__init__.py ``EMA``."""
    return momentum * past + (1 - momentum) * cur


def argmax_np(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(1, keepdim=True).numpy()


def iterations(n: int, num_classes: int = C, seed: int = 0):
    """Labelled logits, labels and unlabelled logits; some iterations predict no voxel of the last
    two classes, one predicts background nowhere, the labels never hold the last class."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        logits_l = torch.randn(2, num_classes, 4, 6, 6, generator=g)
        logits_u = torch.randn(2, num_classes, 4, 6, 6, generator=g)
        logits_u[:, 0] += 1.0  # background the most frequent prediction
        if i % 2:
            logits_u[:, -2:] -= 20
            logits_l[:, -2:] -= 20
        if i == 3:
            logits_u[:, 0] -= 20
        labels = torch.randint(0, num_classes - 1, (2, 4, 6, 6), generator=g)
        yield logits_l, labels, logits_u


# ----- CReST ----------------------------------------------------------------------------------


def test_crest_rates_by_hand():
    weighting = CReSTWeighting(4)
    # mu = (N / 1000)^(1/3) = 1, 0.5, 0.2, 0.1: ranks reversed, the majority gets the minority's mu
    counts = torch.tensor([1000.0, 125.0, 8.0, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(weighting.from_counts(counts).numpy(), [0.1, 0.2, 0.5, 1.0], rtol=1e-6)
    # order of the classes does not matter, only their ranks
    counts = torch.tensor([8.0, 1000.0, 1.0, 125.0], dtype=torch.float64)
    np.testing.assert_allclose(weighting.from_counts(counts).numpy(), [0.5, 0.1, 1.0, 0.2], rtol=1e-6)
    # classes 1 and 3 absent: they tie at e = (1e-8 / 8)^(1/3); ranked 0, 2, 1, 3 (ties in class
    # order), so class 1 takes rank 1's partner (class 2's mu 0.5) and class 3 takes class 0's 1
    e = (1e-8 / (8 + 1e-8)) ** (1 / 3)
    counts = torch.tensor([8.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(weighting.from_counts(counts).numpy(), [e, 0.5, e, 1.0], rtol=1e-6)


def test_crest_rates_tie_order_is_dhcs_on_many_count_vectors():
    g = torch.Generator().manual_seed(3)
    weighting = CReSTWeighting(6)
    for _ in range(200):
        counts = torch.randint(0, 4, (6,), generator=g).double() * torch.randint(0, 3, (6,), generator=g)  # many ties
        np.testing.assert_allclose(
            weighting.from_counts(counts).numpy(), dhc_crest_weights(counts.numpy()), rtol=1e-9, atol=0
        )


def test_crest_weighting_follows_dhc_over_iterations_on_the_unlabelled_argmax():
    labelled_counts = np.array([5000.0, 700.0, 300.0, 20.0, 0.0])  # class 4 absent from the labelled set
    ours = CReSTWeighting(C)
    ours.initialise(torch.from_numpy(labelled_counts))
    reference = dhc_crest_weights(labelled_counts)  # init_crest_weight: no blending
    np.testing.assert_allclose(ours.weights.numpy(), reference, rtol=1e-6)
    for logits_l, labels, logits_u in iterations(8):
        fresh = dhc_crest_weights(dhc_histogram(argmax_np(logits_u), C))  # get_weights(output_u)
        reference = dhc_ema(fresh, reference)
        weights = ours.update(logits_l, labels, logits_u)
        np.testing.assert_allclose(weights.numpy(), reference, rtol=1e-6, atol=1e-7)
    # the labelled half (predictions and labels) plays no part
    before = ours.weights.clone()
    other = copy.deepcopy(ours)
    ours.update(logits_l, labels, logits_u)
    other.update(torch.randn_like(logits_l), torch.zeros_like(labels), logits_u)
    assert torch.equal(ours.weights, other.weights) and not torch.equal(ours.weights, before)


def test_crest_step_is_dhcs_and_trains_both_networks():
    method = build(CReST)
    check_step_against_dhc(method, dhc_crest_weights, whole_batch=False)


# ----- SimiS ----------------------------------------------------------------------------------


def test_simis_weights_by_hand():
    weighting = SimiSWeighting(4)
    # P = 0.6, 0.3, 0.1, 0: C (max P - P) = 4 (0, 0.3, 0.5, 0.6)
    counts = torch.tensor([6.0, 3.0, 1.0, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(weighting.from_counts(counts).numpy(), [0.0, 1.2, 2.0, 2.4], atol=1e-7)
    # initialised as C blended once (0.99) with the labelled set's weights
    weighting.initialise(counts)
    np.testing.assert_allclose(weighting.weights.numpy(), [3.96, 3.972, 3.98, 3.984], rtol=1e-6)


def test_simis_weighting_follows_dhc_over_iterations_on_the_whole_batchs_argmax():
    labelled_counts = np.array([5000.0, 700.0, 300.0, 20.0, 0.0])
    ours = SimiSWeighting(C)
    ours.initialise(torch.from_numpy(labelled_counts))
    reference = dhc_ema(dhc_simis_weights(labelled_counts), np.ones(C) * C)  # init_weight
    np.testing.assert_allclose(ours.weights.numpy(), reference, rtol=1e-6)
    for logits_l, labels, logits_u in iterations(8):
        whole = torch.cat([logits_l, logits_u])  # get_weights(output): both halves
        reference = dhc_ema(dhc_simis_weights(dhc_histogram(argmax_np(whole), C)), reference)
        weights = ours.update(logits_l, labels, logits_u)
        np.testing.assert_allclose(weights.numpy(), reference, rtol=1e-6, atol=1e-6)
    # the labelled predictions count, the labels do not
    same_labels, other_preds = copy.deepcopy(ours), copy.deepcopy(ours)
    same_labels.update(logits_l, torch.zeros_like(labels), logits_u)
    ours.update(logits_l, labels, logits_u)
    other_preds.update(-logits_l, labels, logits_u)
    assert torch.equal(ours.weights, same_labels.weights) and not torch.equal(ours.weights, other_preds.weights)


def test_simis_background_weight_decays_geometrically_when_it_is_always_the_majority():
    ours = SimiSWeighting(3)
    ours.initialise(torch.tensor([90.0, 9.0, 1.0], dtype=torch.float64))
    start = ours.weights[0].item()
    logits = torch.zeros(1, 3, 2, 2, 2)
    logits[:, 0] = 1.0  # every voxel predicted background
    for _ in range(5):
        ours.update(logits[:0], torch.zeros(0, 2, 2, 2, dtype=torch.long), logits)
    assert ours.weights[0].item() == pytest.approx(start * 0.99**5, rel=1e-6)


def test_simis_step_is_dhcs_and_trains_both_networks():
    method = build(SimiS)
    check_step_against_dhc(method, dhc_simis_weights, whole_batch=True)


# ----- both: the co-training step, init, inference, checkpoints -------------------------------


def check_step_against_dhc(method, dhc_weights, whole_batch: bool) -> None:
    """One training step: terms finite, gradients in both networks, and the losses those of the
    DHC script (weights blended before use, each branch's own, on the part of the batch it sees;
    supervised DC+CE and cross pseudo supervision CE both with the learner's weights)."""
    labelled_counts = torch.tensor([3000.0, 400.0, 100.0, 10.0, 0.0], dtype=torch.float64)
    method.initialise(labelled_counts)
    method.train()
    batch = tiny_batch()
    x, y, n = batch.image, batch.label, batch.n_labelled
    start = {
        k: v.numpy().astype(np.float64)
        for k, v in (("a", method.weighting_a.weights), ("b", method.weighting_b.weights))
    }
    shadow = copy.deepcopy(method)  # same networks; train-mode outputs do not depend on running stats
    with torch.no_grad():
        out_a, out_b = shadow.student_a(x), shadow.student_b(x)
    progress = Progress(epoch=3, max_epochs=10, iteration=5)
    terms = method.training_step(batch, progress)

    assert {"loss", "sup", "cps"} <= set(terms.losses) and set(terms.diagnostics) == {"beta"}
    assert all(torch.isfinite(v).all() for v in terms.losses.values())
    terms.loss.backward()
    for net in (method.student_a, method.student_b):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)

    def branch_weights(out: torch.Tensor, past: np.ndarray) -> torch.Tensor:
        seen = out if whole_batch else out[n:]
        return torch.from_numpy(dhc_ema(dhc_weights(dhc_histogram(argmax_np(seen), C)), past)).float()

    w_a, w_b = branch_weights(out_a, start["a"]), branch_weights(out_b, start["b"])
    torch.testing.assert_close(method.weighting_a.weights, w_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.weighting_b.weights, w_b, rtol=1e-5, atol=1e-6)
    sup = dhc_dc_and_ce(out_a[:n], y, w_a) + dhc_dc_and_ce(out_b[:n], y, w_b)
    # our Dice term is DHC's plus the constant mean foreground weight of each branch
    sup_ours = sup + w_a[1:].mean() + w_b[1:].mean()
    cps = F.cross_entropy(out_a, out_b.argmax(1), weight=w_a) + F.cross_entropy(out_b, out_a.argmax(1), weight=w_b)
    beta = 0.1 * math.exp(-5 * (1 - 2 / 10) ** 2)  # -w 0.1 -r, at schedule epoch 3 - 1
    assert terms.diagnostics["beta"].item() == pytest.approx(beta)
    assert terms.losses["sup"].item() == pytest.approx(sup_ours.item(), rel=1e-5)
    assert terms.losses["cps"].item() == pytest.approx(cps.item(), rel=1e-5)
    assert terms.losses["loss"].item() == pytest.approx(sup_ours.item() + beta * cps.item(), rel=1e-5)


@pytest.mark.parametrize("cls", [CReST, SimiS])
def test_branches_are_kaiming_and_xavier_and_no_teacher_is_built(cls):
    method = build(cls)
    assert (method.settings.init_a, method.settings.init_b) == ("kaiming", "xavier")
    assert method.teachers() == [] and not any("teacher" in key for key in method.state_dict())
    # xavier's std sqrt(2 / (fan_in + fan_out)) is below kaiming's sqrt(2 / fan_in) on a 3x3x3 conv
    conv_a = method.student_a.encoder[1][0].weight
    conv_b = method.student_b.encoder[1][0].weight
    fan_in = conv_a.shape[1] * 27
    assert conv_a.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.35)
    assert conv_b.std().item() == pytest.approx((2 / (fan_in + conv_b.shape[0] * 27)) ** 0.5, rel=0.35)
    assert method.weighting_a is not method.weighting_b


@pytest.mark.parametrize("cls", [CReST, SimiS])
def test_defaults_are_dhcs(cls):
    s = build(cls).settings
    assert s.weight_momentum == 0.99
    assert s.beta_max == 0.1 and s.rampup_epochs is None
    assert (s.init_a, s.init_b) == ("kaiming", "xavier")
    if cls is CReST:
        assert s.weight_power == pytest.approx(1 / 3)
        assert build(cls, weight_power=0.5, weight_momentum=0.9).weighting_b.power == 0.5


@pytest.mark.parametrize("cls", [CReST, SimiS])
def test_predict_is_the_mean_of_both_branches_logits(cls):
    method = build(cls).eval()
    x = tiny_batch().image[:1]
    with torch.no_grad():
        expected = (method.student_a(x) + method.student_b(x)) / 2
        torch.testing.assert_close(method.predict(x), expected)


@pytest.mark.parametrize("cls", [CReST, SimiS])
def test_class_weights_survive_a_checkpoint(cls):
    method = build(cls)
    method.initialise(torch.tensor([3000.0, 400.0, 100.0, 10.0, 0.0], dtype=torch.float64))
    method.train()
    method.training_step(tiny_batch(), Progress(epoch=1, max_epochs=10, iteration=0))
    state = method.state_dict()
    assert "weighting_a.weights" in state and "weighting_b.weights" in state
    restored = build(cls)
    restored.load_state_dict(state)
    assert torch.equal(restored.weighting_a.weights, method.weighting_a.weights)
    assert torch.equal(restored.weighting_b.weights, method.weighting_b.weights)
    batch = tiny_batch(seed=1)
    with torch.no_grad():
        a = method.training_step(batch, Progress(epoch=1, max_epochs=10, iteration=1))
        b = restored.training_step(batch, Progress(epoch=1, max_epochs=10, iteration=1))
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(restored.weighting_a.weights, method.weighting_a.weights)
