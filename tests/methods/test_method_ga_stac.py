"""GA-CPS and DHC+STAC against their official formulas (tests/ga_stac_reference.py, written out from
GA's ``GALoss.py`` and ``train_*_CPS.py`` and STAC's ``data_loaders.py`` and ``train_dhc_stac.py``):
the losses on small tensors, STAC's shape transformation on a small labelled volume, and a whole
training step of each row against the script's step on the same networks and batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dhc_reference import dhc_dc_and_ce
from ga_stac_reference import (
    STAC_ACTIVE_CLASS,
    ga_ce,
    ga_dice,
    stac_distance_loss,
    stac_flow_augment,
    stac_labelled_distance,
    stac_sdf,
)

from micd.errors import SettingsError
from micd.methods import Batch, Progress, build_method
from micd.methods import stac as stac_module
from micd.methods.ga import gradient_aware_cross_entropy, gradient_aware_dice
from micd.methods.stac import labelled_distance_loss, shape_transform, signed_distance

C = 5


def logits_and_labels(seed: int, absent: tuple[int, ...] = (), shape=(2, 4, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    present = [c for c in range(C) if c not in absent]
    labels = torch.tensor(present)[torch.randint(0, len(present), shape, generator=g)]
    return torch.randn(shape[0], C, *shape[1:], generator=g, dtype=torch.float64) * 2, labels


# ----- GA's losses ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "gamma"), [(10, 0.5), (100, 0.5), (37, 0.0), (50, 1.0), (3, 0.25)])
def test_gace_is_gas_formula_with_its_gradient(k, gamma):
    for seed in range(3):
        logits, labels = logits_and_labels(seed, absent=(3,) if seed else ())
        ours_logits = logits.clone().requires_grad_(True)
        ga_logits = logits.clone().requires_grad_(True)
        ours = gradient_aware_cross_entropy(ours_logits, labels, k, gamma)
        expected = ga_ce(ga_logits, labels, k, gamma)
        assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
        ours.backward()
        expected.backward()
        np.testing.assert_allclose(ours_logits.grad.numpy(), ga_logits.grad.numpy(), rtol=1e-5, atol=1e-9)


def test_gace_keeps_only_the_hardest_voxels():
    logits, labels = logits_and_labels(4)
    per_voxel = F.cross_entropy(logits, labels, reduction="none").flatten()
    kept = int(per_voxel.numel() * 10 / 100)
    hardest = per_voxel.topk(kept).indices
    # the easy voxels' logits may change freely: the loss reads the hardest tenth only
    easier = logits.movedim(1, -1).reshape(-1, C).clone()
    easy = torch.ones(per_voxel.numel(), dtype=torch.bool)
    easy[hardest] = False
    easier[easy] = 0.0
    easier[easy, labels.flatten()[easy]] = 20.0  # confident and right: still among the easy ones
    changed = easier.reshape(*labels.shape, C).movedim(-1, 1)
    assert gradient_aware_cross_entropy(changed, labels, 10, 0.5).item() == pytest.approx(
        gradient_aware_cross_entropy(logits, labels, 10, 0.5).item(), rel=1e-12
    )
    assert gradient_aware_cross_entropy(changed, labels, 100, 0.5).item() != pytest.approx(
        gradient_aware_cross_entropy(logits, labels, 100, 0.5).item(), rel=1e-3
    )


def test_gace_weighs_each_class_by_a_power_of_its_kept_voxels():
    logits, labels = logits_and_labels(5)
    per_voxel = F.cross_entropy(logits, labels, reduction="none").flatten()
    n = per_voxel.numel()
    counts = torch.bincount(labels.flatten(), minlength=C).double()
    sums = torch.zeros(C, dtype=torch.float64).index_add(0, labels.flatten(), per_voxel)
    for gamma in (0.0, 0.5, 1.0):
        expected = (sums / (counts ** (1 - gamma) * n**gamma)).sum()  # k = 100: every voxel kept
        assert gradient_aware_cross_entropy(logits, labels, 100, gamma).item() == pytest.approx(
            expected.item(), rel=1e-9
        )
    # gamma 0: the sum of the classes' mean losses; 1: the mean loss of all voxels
    assert gradient_aware_cross_entropy(logits, labels, 100, 0.0).item() == pytest.approx((sums / counts).sum().item())
    assert gradient_aware_cross_entropy(logits, labels, 100, 1.0).item() == pytest.approx(per_voxel.mean().item())


def test_gadice_is_gas_formula_with_the_absent_class_term_and_its_gradient():
    for seed, absent in enumerate([(), (2,), (0, 4)]):
        logits, labels = logits_and_labels(seed, absent=absent)
        ours_logits = logits.clone().requires_grad_(True)
        ga_logits = logits.clone().requires_grad_(True)
        ours = gradient_aware_dice(ours_logits, labels)
        expected = ga_dice(ga_logits.softmax(1), labels)
        assert ours.item() == pytest.approx(expected.item(), rel=1e-9)
        ours.backward()
        expected.backward()
        np.testing.assert_allclose(ours_logits.grad.numpy(), ga_logits.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_gadice_absent_class_term_is_its_mean_squared_probability_with_gradient_2p_over_n():
    logits, labels = logits_and_labels(7, absent=(3,))
    probs = logits.softmax(1).detach().requires_grad_(True)
    # the same loss, read off the probabilities: GADice's absent term depends on p_3 alone
    term = (probs[:, 3].detach() * probs[:, 3]).sum() / labels.numel()
    assert term.item() == pytest.approx((probs[:, 3] ** 2).mean().item())
    term.backward()
    np.testing.assert_allclose(probs.grad[:, 3].numpy(), (probs[:, 3] / labels.numel()).detach().numpy())
    # with class 3 present in one voxel, its term is the Dice loss instead
    with_three = labels.clone()
    with_three[0, 0, 0, 0] = 3
    absent_value = gradient_aware_dice(logits, labels).item()
    assert gradient_aware_dice(logits, with_three).item() != pytest.approx(absent_value, rel=1e-3)


# ----- STAC's shape transformation --------------------------------------------------------------


def small_labelled_volume():
    """A 24^3 AMOS-class volume: a small gallbladder (class 4, 3x3x3) and a large liver (class 6)
    far from it, on a smooth image."""
    label = np.zeros((24, 24, 24), dtype=np.int64)
    label[5:8, 5:8, 5:8] = 4
    label[12:22, 12:22, 12:22] = 6
    z, y, x = np.indices(label.shape)
    image = (np.sin(z / 3.0) + np.cos(y / 4.0) + x / 24.0) / 3 + 0.1 * (label > 0)
    return image, label


@pytest.mark.parametrize("magnitude", [-3, -2, 3])
def test_stac_transformation_moves_voxels_near_the_small_organ_only(magnitude):
    image, label = small_labelled_volume()
    distance = signed_distance(np.isin(label, [4]))
    moved_image, moved_label = shape_transform(image, label, distance, magnitude, 1.0, -1.0)
    expected_image, expected_label = stac_flow_augment(image, label, stac_sdf(label == 4), (1, -1, 3), magnitude)
    np.testing.assert_array_equal(moved_label, expected_label)
    np.testing.assert_allclose(moved_image, expected_image, rtol=1e-12, atol=1e-12)
    gallbladder_before, gallbladder_after = (label == 4).sum(), (moved_label == 4).sum()
    # a negative step grows it by up to a layer of voxels (27 -> 81 at -3), a positive one shrinks it
    # (27 -> 9 at 3; at 2 the 3^3 cube keeps its voxels, a 5^3 one loses 54)
    assert gallbladder_after > gallbladder_before if magnitude < 0 else gallbladder_after < gallbladder_before
    changed = moved_label != label
    assert changed.any() and np.abs(distance[changed]).max() <= 2
    # the liver, a large organ away from it, keeps every voxel and its image
    np.testing.assert_array_equal(moved_label == 6, label == 6)
    far = np.abs(distance) > 8  # the flow's weight exp(-|sdf|) is below 4e-4 there
    inside = (slice(1, -1),) * 3  # the script's outermost layer reads 0 where the flow points outwards
    np.testing.assert_allclose(moved_image[inside][far[inside]], image[inside][far[inside]], atol=1e-3)


def test_stac_transformation_of_a_step_of_zero_or_one_changes_no_label():
    """Steps of magnitude 1 move the boundary by under half a voxel: the labels stay."""
    image, label = small_labelled_volume()
    distance = signed_distance(label == 4)
    for magnitude in (-1, 0, 1):
        _, moved_label = shape_transform(image, label, distance, magnitude, 1.0, -1.0)
        np.testing.assert_array_equal(moved_label, label)
    moved_image, _ = shape_transform(image, label, distance, 0, 1.0, -1.0)
    np.testing.assert_array_equal(moved_image, image)


def test_dhc_stac_transforms_labelled_patches_with_stacs_amos_organs_and_its_distance_target(monkeypatch):
    image, label = small_labelled_volume()
    label[1:3, 18:21, 2:5] = 3  # left kidney: deformed by no script, but in its distance target
    label[2:5, 2:4, 18:21] = 15  # prostate/uterus: deformed, missing from the distance target
    method = build_method("dhc_stac", {}, 16, n_filters=2)
    assert method.deformed.nonzero().flatten().tolist() == [4, 5, 11, 12, 13, 15]
    assert method.distance_classes() == [3, 4, 10, 11, 12, 14]
    monkeypatch.setattr(stac_module, "random_magnitude", lambda max_extent: -3)
    batch = Batch(image=torch.from_numpy(image)[None, None], label=torch.from_numpy(label)[None])
    moved_image, moved_label, target, has_target = method.transform_labelled(batch)
    # the script deforms whole volumes before the crop; at this patch's inside both agree
    expected_image, expected_label = stac_flow_augment(image, label, stac_sdf(np.isin(label, [4, 15])), magnitude=-3)
    inside = (slice(3, -3),) * 3
    np.testing.assert_array_equal(moved_label[0].numpy()[inside], expected_label[inside])
    np.testing.assert_allclose(moved_image[0, 0].numpy()[inside], expected_image[inside], atol=1e-12)
    assert (moved_label == 4).sum() > (label == 4).sum() and (moved_label == 15).sum() > (label == 15).sum()
    assert (moved_label == 3).sum() == (label == 3).sum() and (moved_label == 6).sum() == (label == 6).sum()
    expected_target = stac_labelled_distance(moved_label[0].numpy(), STAC_ACTIVE_CLASS["amos"])
    np.testing.assert_allclose(target[0, 0].numpy(), expected_target, rtol=1e-6)
    assert has_target.tolist() == [True]


def test_stac_labelled_distance_loss_is_the_scripts_broadcast_over_pairs():
    g = torch.Generator().manual_seed(3)
    predicted = torch.rand(2, 1, 4, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    target = torch.rand(2, 1, 4, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    every = torch.tensor([True, True])
    expected = stac_distance_loss(predicted, target[:, 0])  # the script's (B, D, H, W) target
    assert labelled_distance_loss(predicted, target, every, "all").item() == pytest.approx(expected.item(), rel=1e-12)
    own = stac_distance_loss(predicted, target)
    assert labelled_distance_loss(predicted, target, every, "own").item() == pytest.approx(own.item(), rel=1e-12)
    assert own.item() != pytest.approx(expected.item(), rel=1e-3)
    # a patch without the distance classes (the script's 0/0 target) is left out
    partial = labelled_distance_loss(predicted, target, torch.tensor([True, False]), "all")
    assert partial.item() == pytest.approx(stac_distance_loss(predicted, target[:1, 0]).item(), rel=1e-12)


def test_dhc_stac_settings_are_checked():
    with pytest.raises(SettingsError, match="deformed_classes"):
        build_method("dhc_stac", {"deformed_classes": [0, 2]}, 4, n_filters=2)
    with pytest.raises(SettingsError, match="distance_pairs"):
        build_method("dhc_stac", {"distance_pairs": "some"}, 4, n_filters=2)
    with pytest.raises(SettingsError, match="supervised_top_percent"):
        build_method("ga_cps", {"supervised_top_percent": 0}, 4, n_filters=2)


def test_dhc_stac_elsewhere_deforms_the_rarer_half_of_the_foreground():
    method = build_method("dhc_stac", {}, 6, n_filters=2)
    method.initialise(torch.tensor([9000.0, 50.0, 3000.0, 10.0, 800.0, 900.0]))
    assert method.deformed.nonzero().flatten().tolist() == [1, 3]


# ----- whole steps against the scripts' ---------------------------------------------------------


def step_batch(num_classes: int, seed: int = 11) -> Batch:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 1, 16, 16, 16, generator=g, dtype=torch.float64)
    coarse = torch.randint(0, num_classes, (2, 4, 4, 4), generator=g)
    label = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return Batch(image=image, label=label)


def test_ga_cps_step_is_gas_train_cps():
    torch.manual_seed(0)
    method = build_method("ga_cps", {}, C, n_filters=2).double().eval()  # eval: no dropout, same forward
    batch, progress = step_batch(C), Progress(epoch=30, max_epochs=100, iteration=0)
    result = method.training_step(batch, progress)
    out_a, out_b = method.student_a(batch.image), method.student_b(batch.image)
    label_l = batch.label
    loss_seg = ga_ce(out_a[:2], label_l, 10, 0.5) + ga_ce(out_b[:2], label_l, 10, 0.5)
    loss_dice = ga_dice(out_a.softmax(1)[:2], label_l) + ga_dice(out_b.softmax(1)[:2], label_l)
    max_a, max_b = out_a.detach().argmax(1), out_b.detach().argmax(1)
    loss_cps = ga_ce(out_a, max_b, 100, 0.5) + ga_ce(out_b, max_a, 100, 0.5)
    cps_w = 0.1 * float(np.exp(-5.0 * (1 - 29 / 100) ** 2))  # DHC's per-epoch schedule (GA: epoch 30)
    expected = loss_seg + loss_dice + cps_w * loss_cps
    assert result.losses["cps"].item() == pytest.approx(loss_cps.item(), rel=1e-6)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_dhc_stac_step_is_stacs_train_dhc_stac(monkeypatch):
    num_classes = 16
    magnitudes = iter([-3, 2, -2, 3])
    monkeypatch.setattr(stac_module, "random_magnitude", lambda max_extent: next(magnitudes))
    torch.manual_seed(0)
    method = build_method("dhc_stac", {"unlabelled_start_epoch": 30}, num_classes, n_filters=2).double().eval()
    method.initialise(torch.tensor([9000.0] + [100.0] * 15))
    batch = step_batch(num_classes)
    w_a, w_b = method.weighting_a.weights.clone(), method.weighting_b.weights.clone()
    result = method.training_step(batch, Progress(epoch=30, max_epochs=100, iteration=0))

    # the script, on the same transformed labelled patches (the dataset's step, checked above)
    active = STAC_ACTIVE_CLASS["amos"]
    deformed_classes = [i + 1 for i, a in enumerate(active) if a]
    images, labels, targets = [], [], []
    for image, label, magnitude in zip(batch.image[:2, 0].numpy(), batch.label.numpy(), (-3, 2)):
        distance = stac_sdf(np.isin(label, deformed_classes))
        image, label = stac_flow_augment(image, label, distance, magnitude=magnitude, mode="nearest")
        images.append(image)
        labels.append(label.astype(np.int64))
        targets.append(stac_labelled_distance(label, active))
    image = torch.cat([torch.from_numpy(np.stack(images))[:, None], batch.image[2:]])
    label_l, distance_gt = torch.from_numpy(np.stack(labels)), torch.from_numpy(np.stack(targets))
    (out_a, dist_a), (out_b, dist_b) = method.student_a.with_distance(image), method.student_b.with_distance(image)
    dist_a, dist_b = dist_a.tanh(), dist_b.tanh()
    weight_a = method.weighting_a.weights  # each branch's weighting, updated by the step as the script's
    weight_b = method.weighting_b.weights
    assert not torch.equal(weight_a, w_a) and not torch.equal(weight_b, w_b)
    loss_sup = dhc_dc_and_ce(out_a[:2], label_l, weight_a) + dhc_dc_and_ce(out_b[:2], label_l, weight_b)
    loss_sup = loss_sup + stac_distance_loss(dist_a[:2], distance_gt) + stac_distance_loss(dist_b[:2], distance_gt)
    max_a, max_b = out_a[2:].detach().argmax(1), out_b[2:].detach().argmax(1)
    loss_cps = F.cross_entropy(out_a[2:], max_b, weight=weight_a) + F.cross_entropy(out_b[2:], max_a, weight=weight_b)
    loss_cps = loss_cps + stac_distance_loss(dist_a[2:], dist_b[2:].detach())
    loss_cps = loss_cps + stac_distance_loss(dist_b[2:], dist_a[2:].detach())
    mean_distance = ((dist_a[2:] + dist_b[2:]) / 2).detach().numpy()
    pseudo = np.round((max_a.numpy() + max_b.numpy()) / 2)
    augmented = [
        stac_flow_augment(batch.image[2 + i, 0].numpy(), pseudo[i], mean_distance[i, 0], magnitude=m)
        for i, m in enumerate((-2, 3))
    ]
    image_u_aug = torch.from_numpy(np.stack([a[0] for a in augmented]))[:, None]
    label_u_aug = torch.from_numpy(np.stack([a[1] for a in augmented]).astype(np.int64))
    loss_u_aug = dhc_dc_and_ce(method.student_a(image_u_aug), label_u_aug, weight_a) + dhc_dc_and_ce(
        method.student_b(image_u_aug), label_u_aug, weight_b
    )
    cps_w = 0.1 * float(np.exp(-5.0 * (1 - 29 / 100) ** 2))
    expected = loss_sup + cps_w * loss_cps + cps_w * loss_u_aug
    # ours: Dice as mean w (1 - dice), DHC's -mean w dice plus the mean weight, in four Dice+CE terms
    offset = (1 + cps_w) * (weight_a[1:].mean() + weight_b[1:].mean()).item()
    assert result.losses["transformed"].item() == pytest.approx(loss_u_aug.item() + offset / (1 + cps_w), rel=1e-6)
    assert result.loss.item() == pytest.approx(expected.item() + offset, rel=1e-6)


# ----- their published rows -------------------------------------------------------------------


def test_published_rows_since_dhc_name_their_pipeline_and_source_and_add_up():
    import pandas as pd

    from micd.data.classes import classes_for

    root = Path(__file__).resolve().parents[2]
    rows = pd.read_csv(root / "config" / "published" / "since_dhc.csv")
    dhc = pd.read_csv(root / "config" / "published" / "dhc_tables.csv")
    assert list(rows.columns) == [*dhc.columns, "pipeline", "reported_by", "source"]
    assert all(source.startswith(who) for who, source in zip(rows["reported_by"], rows["source"], strict=True))
    assert rows["pipeline"].isin(["dhc", "ga"]).all() and rows["source"].str.contains("github.com").all()
    # the papers' names: whose table and which pipeline are columns of their own (the tables' marks)
    assert set(rows["method"]) == {"GA-CPS", "TAK", "DHC", "DHC+STAC"}
    reported_by = rows.groupby("pipeline")["reported_by"].unique().map(list).to_dict()
    assert reported_by == {"ga": ["TAK (Gu et al., arXiv 2501.13470)"], "dhc": ["STAC (Gu et al., 2024)"]}
    keys = ["dataset", "labeled_percent", "method", "pipeline"]
    for (family, ratio, method, _), group in rows.groupby(keys):
        shorts = [c.short for c in classes_for(family) if c.label != 0]
        organs = group[group["class"] != "mean"]
        assert set(organs["class"]) <= set(shorts), (family, method)
        if len(organs):
            assert sorted(organs["class"]) == sorted(shorts)
            mean = group.loc[group["class"] == "mean", "value"].item()
            assert organs["value"].mean() == pytest.approx(mean, abs=0.1), (family, ratio, method)


# ----- through the engine ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "settings"),
    [("ga_cps", {}), ("dhc_stac", {"unlabelled_start_epoch": 1, "deformed_classes": [2, 3]})],
    ids=["ga_cps", "dhc_stac"],
)
def test_a_run_killed_and_resumed_trains_the_same_weights(tmp_path, method, settings):
    """The engine trains both rows; STAC's random steps come from the checkpointed generator, so a
    resumed run draws what the straight run drew."""
    from training_helpers import StopAt, final_state, tiny_data, tiny_settings, write_tiny_cases

    from micd.training.loop import Trainer

    data_dir = write_tiny_cases(tmp_path / "preprocessed")
    train = tiny_settings()
    straight = Trainer(method, settings, train, tiny_data(data_dir), tmp_path / "straight", seed=1)
    assert straight.fit()
    assert not StopAt(method, settings, train, tiny_data(data_dir), tmp_path / "resumed", seed=1).fit()
    assert Trainer(method, settings, train, tiny_data(data_dir), tmp_path / "resumed", seed=1).fit()
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    log = (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()
    if method == "dhc_stac":
        assert '"transformed"' not in log[0] and '"transformed"' in log[-1]
