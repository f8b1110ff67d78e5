"""SS-Net and DST against DHC's scripts (``code/train_ssnet.py``, ``code/train_dst.py`` and their
networks in ``code/models/``), whose formulas are written out here on small tensors: one step of
each trains the parts DHC's trains, and each distinctive mechanism agrees with DHC's to 1e-6."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_soft_dice
from dhc_reference import one_hot as _one_hot
from torch import nn

from micd.errors import SettingsError
from micd.methods.base import Batch, Progress, scheduled_rampup, settings_from_dict
from micd.methods.dst import DST, confident_pseudo_labels, worst_case_loss
from micd.methods.micd import frozen_batchnorm_statistics
from micd.methods.ssnet import (
    PrototypeMemory,
    SSNet,
    _rescaled,
    adversarial_direction,
    adversarial_smoothness,
    prototype_separation,
    soft_dice_distance,
    unit_directions,
)
from micd.nets import VNet
from micd.nets.derived import derived_network
from micd.nets.vnet_dst import DecoupledVNet, reverse_gradient, warm_start_coefficient
from micd.nets.vnet_ssnet import SSNetVNet

C = 5  # classes, background included


def build(cls, dropout=0.0, n_filters=2, **settings):
    torch.manual_seed(0)
    network = functools.partial(VNet, C, n_filters=n_filters, dropout=dropout)
    return cls(settings_from_dict(cls.Settings, settings, cls.name), C, network).train()


def tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 1, 16, 16, 16, generator=g)
    label = torch.randint(0, C, (2, 16, 16, 16), generator=g)
    return Batch(image=image, label=label)


def grads_of(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def assert_close_to_scale(ours: list[torch.Tensor], theirs: list[torch.Tensor], rel: float) -> None:
    """Every element within ``rel`` times the largest magnitude over all the tensors: gradients of
    convolution biases ahead of a BatchNorm are rounding noise around 0, relative errors of
    elements near 0 mean nothing."""
    a = torch.cat([t.flatten() for t in ours])
    b = torch.cat([t.flatten() for t in theirs])
    assert (a - b).abs().max() <= rel * b.abs().max()


def dhc_soft_dice_loss(x: torch.Tensor, y: torch.Tensor, smooth: float, do_bg: bool = True) -> torch.Tensor:
    """utils/loss.py SoftDiceLoss(batch_dice=True) as a loss: ``-mean_c dice_c``."""
    dc = dhc_soft_dice(x, y, smooth)
    return -(dc if do_bg else dc[1:]).mean()


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return _one_hot(labels, C)


# ----- SS-Net: train_ssnet.py, models/vnet.py VNet4SSNet ------------------------------------------


def test_ssnet_step_trains_backbone_heads_and_the_remembered_classes_selectors():
    method = build(SSNet)
    with torch.no_grad():
        method.net.head.bias[1] += 10.0  # predicts class 1 everywhere: right on the labelled class-1 voxels
    batch = tiny_batch()
    progress = Progress(epoch=3, max_epochs=10, iteration=5)
    terms = method.training_step(batch, progress)
    assert set(terms.losses) == {"loss", "sup", "smoothness", "separation_l", "separation_u"}
    assert set(terms.diagnostics) == {"beta"}
    assert all(torch.isfinite(v) for v in terms.losses.values())
    beta = scheduled_rampup(progress, None, 0.1)
    expected = terms.losses["sup"] + beta * (
        terms.losses["smoothness"] + 0.1 * (terms.losses["separation_l"] + terms.losses["separation_u"])
    )
    assert terms.losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms.losses["separation_l"] > 0 and terms.losses["separation_u"] > 0
    # the memory holds DHC's 32 entries of class 1 only (the background is never remembered)
    assert method.memory.sizes.tolist() == [0, 32, 0, 0, 0]
    terms.loss.backward()
    net = method.net
    backbone = [p for n, p in net.named_parameters() if n.split(".")[0] in ("encoder", "down", "up", "decoder", "head")]
    for p in [*backbone, *net.projection_head.parameters(), *net.prediction_head.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(g.abs().sum() > 0 for g in grads_of(net.feature_selectors[1]))
    # DHC scales the memory weights by their own inverse: the memory selectors get (almost) nothing
    assert all(g is not None and g.abs().max() < 1e-6 for g in grads_of(net.memory_selectors[1]))
    for c in (0, 2, 3, 4):  # classes without memory entries: their selectors take no part
        assert all(g is None for g in grads_of(net.feature_selectors[c]) + grads_of(net.memory_selectors[c]))
    # the memory is checkpoint state, and left out of the model file
    state = method.state_dict()
    assert {"memory.features", "memory.sizes"} <= set(state)
    restored = build(SSNet)
    restored.load_state_dict(state)
    assert torch.equal(restored.memory.entries(1), method.memory.entries(1))
    saved = method.inference_state_dict()
    assert not any(key.startswith("memory.") for key in saved)
    deployed = build(SSNet)
    deployed.load_inference_state_dict(saved)
    with torch.no_grad():
        assert torch.equal(deployed.eval().predict(batch.image), method.eval().predict(batch.image))


def dhc_vat3d(net, x, xi, epsilon, iterations, smooth):
    """train_ssnet.py VAT3d: the target from a plain no-grad pass; a random direction in [-0.5, 0.5]
    normalised per sample; with BatchNorm tracking switched off, ``iterations`` times d <- the
    normalised gradient of the Dice loss at x + xi d (by backward, then the weights' gradients
    cleared); the loss at x + epsilon d."""

    def l2_normalise(d):
        return d / (torch.norm(d.view(d.shape[0], -1), dim=1).view(-1, 1, 1, 1, 1) + 1e-8)

    def toggle_tracking(model):
        for m in model.modules():
            if hasattr(m, "track_running_stats"):
                m.track_running_stats ^= True

    with torch.no_grad():
        pred = F.softmax(net(x), dim=1)
    d = l2_normalise(torch.rand(x.shape, dtype=x.dtype).sub(0.5))  # DHC: float32 inputs, float32 noise
    toggle_tracking(net)
    for _ in range(iterations):
        d.requires_grad_(True)
        distance = dhc_soft_dice_loss(F.softmax(net(x + xi * d), dim=1), pred, smooth)
        distance.backward()
        d = l2_normalise(d.grad)
        net.zero_grad()
    lds = dhc_soft_dice_loss(F.softmax(net(x + epsilon * d), dim=1), pred, smooth)
    toggle_tracking(net)
    return lds, d


@pytest.mark.parametrize("iterations", [1, 2])
def test_ssnet_adversarial_direction_and_smoothness_are_dhcs_vat3d(iterations):
    # in double precision: the 1x1x1 bottleneck of a 16^3 patch, normalised over a batch of two,
    # amplifies float32 rounding into differences of 1e-3 in the gradients
    torch.manual_seed(3)
    net = SSNetVNet(C, n_filters=2, dropout=0.0).double().train()
    x = torch.rand(2, 1, 16, 16, 16, dtype=torch.float64)
    reference, ours, probe = copy.deepcopy(net), copy.deepcopy(net), copy.deepcopy(net)

    torch.manual_seed(11)
    lds, d_dhc = dhc_vat3d(reference, x, 10.0, 10.0, iterations, 1e-8)
    torch.manual_seed(11)
    smoothness = adversarial_smoothness(ours, x, 10.0, 10.0, iterations, 1e-8)
    assert smoothness.item() == pytest.approx(lds.item() + 1, abs=1e-10)  # ours: 1 - dice, DHC: -dice

    # the direction itself: unit per sample, DHC's
    with torch.no_grad():
        target = probe(x).softmax(1)
    torch.manual_seed(11)
    with frozen_batchnorm_statistics(probe):
        d = adversarial_direction(probe, x, target, 10.0, iterations, 1e-8)
    assert torch.allclose(d.reshape(2, -1).norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(d, d_dhc, atol=1e-10)
    assert not d.requires_grad and all(p.grad is None for p in probe.parameters())  # weights untouched

    # the same gradient for the weights, and the same running statistics (updated by the target
    # pass only, not by the perturbed ones)
    lds.backward()
    smoothness.backward()
    with_grad = [(p, q) for p, q in zip(ours.parameters(), reference.parameters()) if q.grad is not None]
    vnet_parts = (ours.encoder, ours.down, ours.up, ours.decoder, ours.head)  # not the heads or selectors
    assert {id(p) for p, _ in with_grad} == {id(p) for part in vnet_parts for p in part.parameters()}
    assert all((p.grad is None) == (q.grad is None) for p, q in zip(ours.parameters(), reference.parameters()))
    assert_close_to_scale([p.grad for p, _ in with_grad], [q.grad for _, q in with_grad], 1e-6)
    for (name, b_dhc), b_ours in zip(reference.named_buffers(), ours.buffers()):
        assert torch.allclose(b_ours, b_dhc, atol=1e-12), name
    assert int(ours.encoder[0][1].num_batches_tracked) == 1


def test_unit_directions_and_soft_dice_distance_by_hand():
    d = torch.tensor([3.0, 4.0, 0.0, 0.0, 1.0, 0.0]).reshape(2, 1, 3, 1, 1)  # norms 5 and 1
    expected = torch.tensor([0.6, 0.8, 0.0, 0.0, 1.0, 0.0]).reshape(2, 1, 3, 1, 1)
    assert torch.allclose(unit_directions(d), expected, atol=1e-7)
    labels = torch.randint(0, C, (2, 3, 3, 3))
    same = one_hot(labels)
    assert soft_dice_distance(same, same, 1e-8).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_distance(same, one_hot((labels + 1) % C), 1e-8).item() == pytest.approx(1.0, abs=1e-6)
    p = torch.rand(2, C, 3, 3, 3).softmax(1)
    q = torch.rand(2, C, 3, 3, 3).softmax(1)
    assert soft_dice_distance(p, q, 1e-8).item() == pytest.approx(dhc_soft_dice_loss(p, q, 1e-8).item() + 1, abs=1e-6)


def dhc_class_to_class_memory_loss(features, labels, memory, feature_selectors, memory_selectors):
    """train_ssnet.py contrastive_class_to_class_learned_memory, as written there."""
    num_classes = len(memory)
    loss = 0
    for c in range(num_classes):
        features_c = features[labels == c, :]
        memory_c = memory[c]
        if memory_c is not None and features_c.shape[0] > 1 and memory_c.shape[0] > 1:
            memory_c = F.normalize(memory_c, dim=1)
            distances = 1 - torch.mm(F.normalize(features_c, dim=1), memory_c.transpose(1, 0))
            w = torch.sigmoid(feature_selectors[c](features_c.detach()))
            w = (w.shape[0] / w.sum(dim=0)) * w
            distances = distances * w.repeat(1, distances.shape[1])
            w_m = torch.sigmoid(memory_selectors[c](memory_c)).permute(1, 0)
            w_m = (w_m.shape[0] / w_m.sum(dim=0)) * w_m
            distances = distances * w_m.repeat(distances.shape[0], 1)
            loss = loss + distances.mean()
    return loss / num_classes


def test_ssnet_prototype_separation_is_dhcs_class_to_class_memory_loss():
    torch.manual_seed(5)
    width = 4
    net = SSNetVNet(C, n_filters=2)  # selectors of width 2 * 2
    features = torch.randn(60, width, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3] * 15)  # class 4 absent
    memory = PrototypeMemory(C, capacity=6, width=width)
    # class 1: 5 entries, class 2: one (too few, skipped), class 3: 6, classes 0 and 4: none
    for c, n in ((1, 5), (2, 1), (3, 6)):
        memory.features[c, :n] = torch.randn(n, width)
        memory.sizes[c] = n
    reference_memory = [None if n == 0 else memory.entries(c).clone() for c, n in enumerate(memory.sizes.tolist())]
    ours_net, dhc_net = copy.deepcopy(net), copy.deepcopy(net)
    dhc_features = features.detach().clone().requires_grad_(True)

    ours = prototype_separation(features, labels, memory, ours_net.feature_selectors, ours_net.memory_selectors)
    expected = dhc_class_to_class_memory_loss(
        dhc_features, labels, reference_memory, dhc_net.feature_selectors, dhc_net.memory_selectors
    )
    assert ours.item() == pytest.approx(expected.item(), abs=1e-6)
    ours.backward()
    expected.backward()
    assert torch.allclose(features.grad, dhc_features.grad, atol=1e-6)
    for a, b in zip(ours_net.feature_selectors.parameters(), dhc_net.feature_selectors.parameters()):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert all(p.grad is None for p in ours_net.feature_selectors[2].parameters())  # one entry: skipped

    # by hand: DHC's memory weights are all one; features orthogonal to their class's entries are at
    # distance 1 whatever their (mean-one) weights, features along them at 0
    assert torch.allclose(_rescaled(torch.rand(1, 7) + 0.1), torch.ones(1, 7), atol=1e-6)
    one_class = PrototypeMemory(C, capacity=3, width=2)
    one_class.features[1, :3] = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    one_class.sizes[1] = 3
    small = SSNetVNet(C, n_filters=1)  # selectors of width 2
    pair = torch.tensor([1, 1])
    orthogonal = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    aligned = torch.tensor([[1.0, 0.0], [4.0, 0.0]])
    args = (one_class, small.feature_selectors, small.memory_selectors)
    assert prototype_separation(orthogonal, pair, *args).item() == pytest.approx(1 / C, abs=1e-6)
    assert prototype_separation(aligned, pair, *args).item() == pytest.approx(0.0, abs=1e-6)
    assert prototype_separation(aligned, torch.tensor([2, 2]), *args).item() == 0.0  # no entries of class 2


def test_ssnet_memory_keeps_dhcs_lowest_scored_features_per_class():
    selectors = nn.ModuleList(nn.Linear(2, 1) for _ in range(3))
    with torch.no_grad():
        for s in selectors:  # score: sigmoid of the first coordinate
            s.weight.copy_(torch.tensor([[1.0, 0.0]]))
            s.bias.zero_()
    features = torch.tensor([[5.0, 0.0], [1.0, 1.0], [3.0, 2.0], [2.0, 3.0], [4.0, 4.0], [7.0, 5.0], [8.0, 6.0]])
    labels = torch.tensor([1, 1, 1, 1, 1, 2, 2])
    memory = PrototypeMemory(3, capacity=3, width=2)
    memory.update(features, labels, selectors)
    # more than 3 of class 1: DHC's ascending sort keeps the 3 lowest scores, lowest first
    assert memory.entries(1).tolist() == [[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]]
    assert memory.entries(2).tolist() == [[7.0, 5.0], [8.0, 6.0]]  # all of them, in order
    assert memory.sizes.tolist() == [0, 3, 2]
    # the next update replaces the classes it sees and keeps the others
    memory.update(torch.tensor([[9.0, 9.0]]), torch.tensor([2]), selectors)
    assert memory.entries(2).tolist() == [[9.0, 9.0]] and memory.sizes.tolist() == [0, 3, 1]
    highest = PrototypeMemory(3, capacity=3, width=2, keep="highest")
    highest.update(features, labels, selectors)
    assert highest.entries(1)[:, 0].tolist() == [5.0, 4.0, 3.0]
    with pytest.raises(SettingsError, match="memory_keeps"):
        PrototypeMemory(3, capacity=3, width=2, keep="random")


def test_ssnet_network_predicts_logits_in_eval_mode_and_its_embedding_is_what_the_head_reads():
    method = build(SSNet, dropout=0.5)
    x = tiny_batch().image
    net = method.net
    assert net.projection_head[0].in_features == 2 and net.projection_head[-1].out_features == 4
    assert len(net.feature_selectors) == len(net.memory_selectors) == C
    assert net.dropout.p == 0.5  # width and dropout from the method's VNet factory
    logits, embedding = net.logits_and_embedding(x)  # training mode: dropout on
    assert embedding.shape == (4, 2, 16, 16, 16)
    assert torch.allclose(net.head(embedding), logits, atol=1e-6)  # the dropped map the head reads
    method.eval()
    with torch.no_grad():
        out = method.predict(x)
        assert out.shape == (4, C, 16, 16, 16)
        assert torch.equal(out, net(x))
    assert method.settings.init == "default"  # train_ssnet.py:331-332 commented out
    with pytest.raises(SettingsError, match="functools.partial"):
        derived_network(lambda **kwargs: VNet(C, **kwargs), SSNetVNet)


# ----- DST: train_dst.py, models/vnet_dst.py VNet_Decoupled ----------------------------------------


def test_dst_step_trains_main_and_worst_case_decoders_and_never_the_pseudo_ones():
    method = build(DST)
    with torch.no_grad():
        for net in method.students().values():
            net.pseudo.head.bias[1] += 6.0  # confident pseudo-labels on part of the batch
    terms = method.training_step(tiny_batch(), Progress(epoch=3, max_epochs=10, iteration=700))
    assert set(terms.losses) == {"loss", "sup", "cps", "worst"}
    assert set(terms.diagnostics) == {"confident", "beta", "reversal"}  # not loss terms: the figure leaves them out
    assert all(torch.isfinite(v) for v in terms.losses.values())
    assert terms.losses["cps"] > 0 and 0 < terms.diagnostics["confident"] < 1
    terms.loss.backward()
    for net in (method.student_a, method.student_b):
        trained = [p for n, p in net.named_parameters() if not n.startswith("pseudo.")]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
        assert any(p.grad.abs().sum() > 0 for p in net.worst.parameters())
        # DHC's pseudo heads only give argmax and confidence: nothing reaches them
        assert all(p.grad is None for p in net.pseudo.parameters())


def dhc_worst_case_estimation(y_l, y_l_adv, y_u, y_u_adv):
    """train_dst.py WorstCaseEstimationLoss with shift_log(x) = log(clamp(x + 1e-6, max=1))."""
    prediction_l = torch.argmax(y_l.detach(), dim=1)
    loss_l = F.cross_entropy(y_l_adv, prediction_l)
    prediction_u = torch.argmax(y_u.detach(), dim=1)
    loss_u = F.nll_loss(torch.log(torch.clamp(1.0 - F.softmax(y_u_adv, dim=1) + 1e-6, max=1.0)), prediction_u)
    return 2 * loss_l + loss_u


def test_dst_worst_case_loss_is_dhcs_by_hand_and_on_random_tensors():
    # one voxel, two classes: main argmax 0 (labelled) and 1 (unlabelled); uniform worst-case heads
    main_l = torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1, 1)
    main_u = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1, 1)
    uniform = torch.zeros(1, 2, 1, 1, 1)
    by_hand = 2 * math.log(2) - math.log(0.5 + 1e-6)
    assert worst_case_loss(main_l, uniform, main_u, uniform, 2.0, 1e-6).item() == pytest.approx(by_hand, abs=1e-6)
    # a worst-case head certain of the main head's class: -log(1e-6) on the unlabelled half
    certain = torch.tensor([0.0, 30.0]).reshape(1, 2, 1, 1, 1)
    expected = 2 * math.log(2) - math.log(1 - torch.tensor([0.0, 30.0]).softmax(0)[1].item() + 1e-6)
    assert worst_case_loss(main_l, uniform, main_u, certain, 2.0, 1e-6).item() == pytest.approx(expected, rel=1e-4)

    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        y_l, y_u = torch.randn(2, C, 3, 4, 4, generator=g), torch.randn(2, C, 3, 4, 4, generator=g)
        adv_l = torch.randn(2, C, 3, 4, 4, generator=g, requires_grad=True)
        adv_u = (3 * torch.randn(2, C, 3, 4, 4, generator=g)).requires_grad_(True)
        ours = worst_case_loss(y_l, adv_l, y_u, adv_u, 2.0, 1e-6)
        ref_l, ref_u = adv_l.detach().clone().requires_grad_(True), adv_u.detach().clone().requires_grad_(True)
        expected = dhc_worst_case_estimation(y_l, ref_l, y_u, ref_u)
        assert ours.item() == pytest.approx(expected.item(), abs=1e-6)
        ours.backward()
        expected.backward()
        assert torch.allclose(adv_l.grad, ref_l.grad, atol=1e-7) and torch.allclose(adv_u.grad, ref_u.grad, atol=1e-7)


def test_dst_step_is_dhcs_loss_from_the_three_heads():
    """The whole objective, train_dst.py:270-300 written out, on the branches of copies of the networks."""
    method = build(DST)
    with torch.no_grad():
        method.student_b.pseudo.head.bias[2] += 6.0
    nets = [copy.deepcopy(method.student_a), copy.deepcopy(method.student_b)]
    batch, progress = tiny_batch(1), Progress(epoch=4, max_epochs=10, iteration=1200)
    terms = method.training_step(batch, progress)

    reversal = 2 * 0.1 / (1 + math.exp(-1200 / 500)) - 0.1
    (a, a_pseudo, a_worst), (b, b_pseudo, b_worst) = (net.branches(batch.image, reversal) for net in nets)
    y, n = batch.label, 2

    def dc_and_ce(logits):  # DC_and_CE_loss() unweighted: CE + SoftDice(smooth=1) over the foreground
        return F.cross_entropy(logits, y) + dhc_soft_dice_loss(logits.softmax(1), one_hot(y), 1.0, do_bg=False)

    def onehot_ce(logits, target, mask):
        return (F.cross_entropy(logits, target, reduction="none") * mask).mean()

    confidence_a, target_a = F.softmax(a_pseudo, dim=1).max(dim=1)
    confidence_b, target_b = F.softmax(b_pseudo, dim=1).max(dim=1)
    sup = dc_and_ce(a[:n]) + dc_and_ce(b[:n])
    cps = onehot_ce(a, target_b, (confidence_b > 0.95).float()) + onehot_ce(b, target_a, (confidence_a > 0.95).float())
    worst = dhc_worst_case_estimation(a[:n], a_worst[:n], a[n:], a_worst[n:]) + dhc_worst_case_estimation(
        b[:n], b_worst[:n], b[n:], b_worst[n:]
    )
    w = 0.1 * math.exp(-5 * (1 - 3 / 10) ** 2)  # ramp-up at epoch 4 - 1
    expected = sup + w * (cps + worst)
    assert cps.item() > 0
    assert terms.losses["cps"].item() == pytest.approx(cps.item(), abs=1e-6)
    assert terms.losses["worst"].item() == pytest.approx(worst.item(), abs=1e-5)
    assert terms.losses["loss"].item() == pytest.approx(
        expected.item() + 2, abs=1e-5
    )  # our Dice: 1 - dice, per network
    terms.loss.backward()
    expected.backward()
    for ours, theirs in zip(method.parameters(), [*nets[0].parameters(), *nets[1].parameters()]):
        assert (ours.grad is None) == (theirs.grad is None)
        if ours.grad is not None:
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-5)
    targets, mask = confident_pseudo_labels(b_pseudo, 0.95)
    assert torch.equal(targets, target_b) and torch.equal(mask, (confidence_b > 0.95).float())


def test_dst_gradient_reversal_warms_up_as_dhcs_layer_and_reverses_the_encoders_gradient():
    # WarmStartGradientReverseLayer(alpha=1, lo=0, hi=0.1, max_iters=500) after i steps
    def dhc_coefficient(i):
        return 2.0 * 0.1 / (1.0 + math.exp(-i / 500)) - 0.1

    method = build(DST)
    for i in (0, 1, 500, 3000, 10**6):
        assert method.reversal_coefficient(Progress(0, 10, i)) == pytest.approx(dhc_coefficient(i), abs=1e-12)
    assert warm_start_coefficient(0, 0.0, 0.1, 1.0, 500) == 0.0
    assert warm_start_coefficient(10**6, 0.0, 0.1, 1.0, 500) == pytest.approx(0.1)

    x = torch.randn(3, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -0.3))

    # through the network: the worst-case decoder's gradient reaches the encoder times -coefficient,
    # and its own gradient does not depend on the coefficient
    torch.manual_seed(0)
    net = DecoupledVNet(C, n_filters=2, dropout=0.0).train()
    image = torch.rand(2, 1, 16, 16, 16)

    def worst_grads(coefficient):
        net.zero_grad()
        net.branches(image, coefficient)[2].square().mean().backward()
        encoder = [p.grad.clone() for p in [*net.encoder.parameters(), *net.down.parameters()]]
        return encoder, [p.grad.clone() for p in net.worst.parameters()]

    plain_encoder, plain_worst = worst_grads(-1.0)  # a coefficient of -1 passes the gradient unchanged
    reversed_encoder, reversed_worst = worst_grads(0.05)
    assert_close_to_scale(reversed_encoder, [-0.05 * g for g in plain_encoder], 1e-5)
    assert_close_to_scale(reversed_worst, plain_worst, 1e-5)


def test_dst_predicts_the_mean_of_both_main_heads_in_eval_mode():
    method = build(DST, dropout=0.5)
    x = tiny_batch().image
    method.eval()
    with torch.no_grad():
        a, b = method.student_a(x), method.student_b(x)
        assert a.shape == (4, C, 16, 16, 16)
        assert torch.equal(method.predict(x), (a + b) / 2)
        main, _, _ = method.student_a.branches(x, 0.0)  # eval: no dropout, the main decoder's logits
        assert torch.allclose(main, a, atol=1e-6)
    # the main path is the VNet's own: a VNet's state dict loads into it unchanged
    vnet_keys = set(VNet(C, n_filters=2).state_dict())
    assert vnet_keys < set(method.student_a.state_dict())
    assert method.student_a.dropout.p == 0.5


def test_dst_networks_are_kaiming_and_xavier_initialised_extra_decoders_included():
    assert (DST.Settings().init_a, DST.Settings().init_b) == ("kaiming", "xavier")
    torch.manual_seed(0)
    fan = 64 * 27  # the first convolution of the first decoder stage at width 8: 64 -> 64, 3x3x3
    for init, std in (("kaiming", math.sqrt(2 / fan)), ("xavier", math.sqrt(2 / (fan + fan)))):
        net = DecoupledVNet(C, n_filters=8, init=init)
        for path in (net, net.pseudo, net.worst):
            conv = path.decoder[0][0]
            assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
            assert path.decoder[0][1].weight.eq(1).all()  # BatchNorm to 1 and 0
        assert not torch.equal(net.pseudo.head.weight, net.worst.head.weight)  # independent draws
