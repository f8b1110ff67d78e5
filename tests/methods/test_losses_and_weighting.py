import math

import pytest
import torch

from micd.methods.losses import dice_ce, weighted_cross_entropy, weighted_soft_dice
from micd.methods.weighting import DiffDW, DistDW, make_weighting


def one_voxel_logits(*per_class):
    return torch.tensor(per_class, dtype=torch.float32).reshape(1, len(per_class), 1, 1, 1)


def test_weighted_cross_entropy_is_a_weighted_mean_over_voxels():
    logits = torch.cat([one_voxel_logits(0.0, 0.0), one_voxel_logits(0.0, math.log(3))], dim=2)
    target = torch.tensor([0, 1]).reshape(1, 2, 1, 1)
    # voxel 1: p(0) = 1/2; voxel 2: p(1) = 3/4
    expected_uniform = (math.log(2) + math.log(4 / 3)) / 2
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected_uniform, rel=1e-5)
    weight = torch.tensor([1.0, 3.0])
    expected = (1 * math.log(2) + 3 * math.log(4 / 3)) / 4
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(expected, rel=1e-5)


def test_soft_dice_is_over_foreground_classes_times_their_weights():
    # two voxels, three classes, probabilities one-hot by large logits
    logits = torch.full((1, 3, 2, 1, 1), -30.0)
    logits[0, 1, 0] = 30.0  # voxel 0 predicted class 1 (truth 1)
    logits[0, 1, 1] = 30.0  # voxel 1 predicted class 1 (truth 2)
    target = torch.tensor([1, 2]).reshape(1, 2, 1, 1)
    # smooth 1 (DHC's DC_and_CE_loss): class 1 (2*1 + 1)/(3 + 1) -> loss 1/4; class 2 (0 + 1)/(1 + 1) -> 1/2
    assert weighted_soft_dice(logits, target).item() == pytest.approx((1 / 4 + 1 / 2) / 2, abs=1e-6)
    weight = torch.tensor([5.0, 2.0, 0.5])
    assert weighted_soft_dice(logits, target, weight).item() == pytest.approx((2 / 4 + 0.5 / 2) / 2, abs=1e-6)
    assert dice_ce(logits, target, weight).item() == pytest.approx(
        weighted_cross_entropy(logits, target, weight).item() + (2 / 4 + 0.5 / 2) / 2, abs=1e-6
    )
    # a smaller smooth: class 2, absent from the prediction, costs almost a whole loss of 1
    assert weighted_soft_dice(logits, target, smooth=1e-8).item() == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)


def test_distdw_weights_from_counts_and_blend():
    weighting = DistDW(3)
    counts = torch.tensor([1000.0, 100.0, 10.0], dtype=torch.float64)
    weighting.initialise(counts)
    # P = (1000, 10, 100) ; log P / max log P * C
    expected = torch.tensor([0.0, 3 * math.log(10) / math.log(100), 3.0])
    assert torch.allclose(weighting.weights, expected, atol=1e-4)
    # the unlabelled prediction is all class 0 except one voxel of each other class
    logits = torch.zeros(1, 3, 1, 1, 12)
    logits[0, 0, ..., :10] = 1
    logits[0, 1, ..., 10] = 1
    logits[0, 2, ..., 11] = 1
    fresh = weighting.weights_from_counts(torch.tensor([10.0, 1.0, 1.0], dtype=torch.float64))
    weighting.update(torch.zeros(0, 3, 1, 1, 12), torch.zeros(0, 1, 1, 12, dtype=torch.long), logits)
    assert torch.allclose(weighting.weights, 0.99 * expected + 0.01 * fresh, atol=1e-5)
    assert weighting.weights[0] == 0  # the most frequent class weighs nothing


def test_diffdw_follows_the_learning_and_unlearning_rule():
    weighting = DiffDW(2)
    assert torch.equal(weighting.weights, torch.full((2,), 2.0))
    labels = torch.tensor([[0, 0, 1, 1]]).reshape(1, 1, 1, 4)

    def logits_predicting(pred):
        return torch.nn.functional.one_hot(torch.tensor(pred), 2).T.float().reshape(1, 2, 1, 1, 4)

    first = [0, 1, 1, 1]  # dice bg 2/3, fg 4/5
    second = [0, 0, 1, 0]  # dice bg 4/5, fg 2/3
    weighting.update(logits_predicting(first), labels, torch.zeros(0))  # against d_0 = 1e-8: both learnt
    weighting.update(logits_predicting(second), labels, torch.zeros(0))
    d0, d1, d2 = torch.full((2,), 1e-8), torch.tensor([2 / 3, 4 / 5]), torch.tensor([4 / 5, 2 / 3])
    m = 49 / 50
    learn = unlearn = torch.zeros(2)
    beta = torch.ones(2)
    for before, now in ((d0, d1), (d1, d2)):
        change = (now - before) * torch.log(now / before)
        learn = m * learn + (1 - m) * torch.where(now > before, change, torch.zeros(2))
        unlearn = m * unlearn + (1 - m) * torch.where(now <= before, change, torch.zeros(2))
        beta = m * beta + (1 - m) * (1 - now)
    score = ((unlearn + 1e-8) / (learn + 1e-8)) ** 0.2 * beta
    assert torch.allclose(weighting.weights, 2 * score / score.max(), atol=1e-5)
    assert weighting.weights[1] == pytest.approx(2.0)  # the class that got worse weighs most


def test_unknown_weighting_names_the_choices():
    with pytest.raises(ValueError, match="diffdw"):
        make_weighting("nope", 3)
