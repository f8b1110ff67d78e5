import dataclasses
import math
from collections import defaultdict

import pytest
import torch
from torch import nn

from micd.methods import METHODS, Batch, Method, Progress, build_method, display_name
from micd.methods.base import gaussian_rampup
from micd.methods.micd import block_mask, feature_distance
from micd.methods.teachers import ema_update

NUM_CLASSES = 4

# parameters a step may leave without gradient, as in DHC's scripts: DST's pseudo decoder (only
# its argmax is used) and SS-Net's selectors of classes not yet in its memory (the background never)
UNTRAINED = defaultdict(tuple, dst=("pseudo.",), ssnet=("feature_selectors.", "memory_selectors."))


def tiny_batch(n_labelled=2, n_unlabelled=2, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n_labelled + n_unlabelled, 1, size, size, size, generator=g)
    label = torch.randint(0, NUM_CLASSES, (n_labelled, size, size, size), generator=g)
    return Batch(image=image, label=label)


def make(name, **settings):
    torch.manual_seed(0)
    method = build_method(name, settings, NUM_CLASSES, n_filters=2)
    counts = torch.bincount(tiny_batch().label.flatten(), minlength=NUM_CLASSES).double()
    method.initialise(counts, unlabelled_cases=8)
    return method.train()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_satisfies_the_interface(name):
    cls = METHODS[name]
    assert issubclass(cls, Method) and cls.name == name
    assert dataclasses.is_dataclass(cls.Settings)
    method = make(name)
    students = method.students()
    assert students and all(isinstance(n, nn.Module) for n in students.values())
    # 32 voxels a side: URPC's UNet pools four times and normalises per instance
    batch = tiny_batch(n_unlabelled=2 if cls.uses_unlabelled else 0, size=32)
    terms = method.training_step(batch, Progress(epoch=3, max_epochs=10, iteration=5, iterations_per_epoch=4))
    assert terms.losses["loss"].requires_grad and torch.isfinite(terms.losses["loss"])
    assert all(torch.isfinite(v) for v in terms.losses.values())
    terms.loss.backward()
    for net in students.values():
        assert all(p.grad is not None for name, p in net.named_parameters() if not name.startswith(UNTRAINED[cls.name]))
    method.after_step(Progress(epoch=3, max_epochs=10, iteration=5, iterations_per_epoch=4))
    assert method.eval().predict(batch.image).shape == (batch.image.shape[0], NUM_CLASSES, 32, 32, 32)
    assert cls.display_name and cls.display_name != cls.__base__.__dict__.get("display_name")


def test_tables_name_methods_by_the_paper_and_ablation_rows_by_their_terms():
    assert display_name("acisis") == "Basak et al." and display_name("fully") == "V-Net (fully)"
    assert display_name("micd_mcpc_cfc") == "MICD (MCPC+CFC)"
    assert display_name("micd_mcpc") == "MICD (MCPC)" and display_name("micd_mcpc_cmd") == "MICD (MCPC+CMD)"
    assert display_name("my_variant") == "my_variant"


def test_unknown_setting_is_refused_with_the_nearest_and_the_known_ones():
    with pytest.raises(ValueError, match=r"micd has no setting 'mask_ration'; did you mean 'mask_ratio'\?") as refused:
        build_method("micd", {"mask_ration": 0.3}, NUM_CLASSES, 2)
    assert "micd's settings: beta_max, cfc, cmd," in str(refused.value)


def test_block_mask_keeps_whole_blocks_at_the_configured_fraction():
    g = torch.Generator().manual_seed(0)
    mask = block_mask((64, 1, 32, 32, 32), block=8, ratio=0.3, generator=g)
    assert mask.shape == (64, 1, 32, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    blocks = mask.reshape(64, 1, 4, 8, 4, 8, 4, 8)
    per_block = blocks.amin(dim=(3, 5, 7))
    assert torch.equal(per_block, blocks.amax(dim=(3, 5, 7)))  # constant within each block
    assert mask.mean().item() == pytest.approx(0.7, abs=0.02)
    # sizes that are not multiples of the block are cropped, not rejected
    assert block_mask((1, 1, 20, 12, 9), 8, 0.5).shape == (1, 1, 20, 12, 9)


def test_feature_distances_on_hand_made_features():
    a = torch.tensor([1.0, 0.0]).reshape(1, 2, 1)
    b = torch.tensor([0.0, 2.0]).reshape(1, 2, 1)
    # normalised: (1, 0) and (0, 1) -> mean squared difference over 2 channels = 1
    assert feature_distance(a, b, "mse").item() == pytest.approx(1.0)
    assert feature_distance(a, b, "cosine").item() == pytest.approx(1.0)
    assert feature_distance(a, a, "kl").item() == pytest.approx(0.0, abs=1e-7)
    assert feature_distance(a, b, "kl").item() > 0


def test_gaussian_rampup():
    assert gaussian_rampup(0, 100, 0.1) == pytest.approx(0.1 * torch.exp(torch.tensor(-5.0)).item())
    assert gaussian_rampup(100, 100, 0.1) == pytest.approx(0.1)
    assert gaussian_rampup(250, 100, 0.1) == pytest.approx(0.1)


def test_teachers_get_no_gradient_and_follow_the_ema_rule():
    method = make("micd")
    before = [p.clone() for p in method.teacher_a.parameters()]
    terms = method.training_step(tiny_batch(), Progress(epoch=5, max_epochs=10, iteration=9))
    terms.loss.backward()
    assert all(p.grad is None and not p.requires_grad for t in method.teachers() for p in t.parameters())
    with torch.no_grad():
        for p in method.student_a.parameters():
            p.add_(1.0)
    method.after_step(Progress(epoch=5, max_epochs=10, iteration=9))
    a = min(1 - 1 / 10, 0.99)
    for t, old, s in zip(method.teacher_a.parameters(), before, method.student_a.parameters()):
        assert torch.allclose(t, a * old + (1 - a) * s)
    assert not method.teacher_a.training  # no dropout in the teachers, even in training mode


def test_ema_uses_the_warm_up_decay_in_the_first_steps():
    teacher, student = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    teacher.weight.data.fill_(0.0)
    student.weight.data.fill_(1.0)
    ema_update(teacher, student, decay=0.99, step=0, copy_statistics=True)  # a = 0: copy the student
    assert teacher.weight.item() == 1.0


def test_pseudo_labels_are_detached_hard_labels():
    from micd.methods.losses import hard_labels

    logits = torch.randn(2, NUM_CLASSES, 4, 4, 4, requires_grad=True)
    labels = hard_labels(logits * 2)
    assert not labels.requires_grad and labels.dtype == torch.long
    assert labels.equal(logits.argmax(1))


@pytest.mark.parametrize("switch", ["mcpc", "cfc", "cmd"])
def test_each_switch_removes_its_term(switch):
    on = make("micd").training_step(tiny_batch(), Progress(5, 10, 3))
    off = make("micd", **{switch: False}).training_step(tiny_batch(), Progress(5, 10, 3))
    assert switch in on.losses and switch not in off.losses
    assert set(on.losses) - set(off.losses) == {switch}


def test_micd_without_its_parts_computes_dhcs_step(monkeypatch):
    calls = []
    monkeypatch.setattr("micd.methods.micd.block_mask", lambda *a, **k: calls.append(1))
    bare = make("micd", masking=False, cfc=False, cmd=False).training_step(tiny_batch(), Progress(5, 10, 3))
    assert calls == []
    dhc = make("dhc").training_step(tiny_batch(), Progress(5, 10, 3))
    assert set(dhc.losses) == set(bare.losses) == {"loss", "sup", "cps"}
    assert all(torch.equal(dhc.losses[k], bare.losses[k]) for k in dhc.losses)
    assert dhc.diagnostics == bare.diagnostics


def test_total_loss_is_supervised_plus_ramped_consistency():
    method = make("micd")
    terms = method.training_step(tiny_batch(), Progress(epoch=4, max_epochs=10, iteration=3))
    beta = gaussian_rampup(3, 10, 0.1)  # DHC: epoch 4 trains with the weight set at the end of epoch 3
    assert terms.diagnostics["beta"].item() == pytest.approx(beta)
    expected = terms.losses["sup"] + beta * (terms.losses["mcpc"] + terms.losses["cfc"] + terms.losses["cmd"])
    assert terms.losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_heterogeneity_switch_gives_uniform_weights():
    method = make("micd", heterogeneous=False)
    method.training_step(tiny_batch(), Progress(5, 10, 3))
    assert torch.equal(method.weighting_a.weights, torch.ones(NUM_CLASSES))
    assert torch.equal(method.weighting_b.weights, torch.ones(NUM_CLASSES))
    hetero = make("micd")
    assert type(hetero.weighting_a).__name__ == "DiffDW" and type(hetero.weighting_b).__name__ == "DistDW"


def test_inference_is_the_mean_of_the_two_students_or_teachers():
    method = make("micd").eval()
    x = tiny_batch().image
    assert torch.allclose(method.predict(x), (method.student_a(x) + method.student_b(x)) / 2)
    teachers = make("micd", inference="teachers").eval()
    assert torch.allclose(teachers.predict(x), (teachers.teacher_a(x) + teachers.teacher_b(x)) / 2)


TWO_BRANCH_ROWS = [
    "cps",
    "cld",
    "dhc",
    "distdw",
    "diffdw",
    "depl",
    "adsh",
    "crest",
    "simis",
    "ga_cps",
    "dhc_stac",
    "micd",
]


def test_two_branch_rows_build_on_the_cotraining_core_with_their_own_weightings():
    from micd.methods.cotraining import CoTraining, CoTrainingSettings

    core = {f.name for f in dataclasses.fields(CoTrainingSettings)}
    weightings = {
        "cps": ("ClassWeighting", "ClassWeighting"),
        "cld": ("LabelledFrequency", "LabelledFrequency"),
        "dhc": ("DiffDW", "DistDW"),
        "distdw": ("DistDW", "DistDW"),
        "diffdw": ("DiffDW", "DiffDW"),
        "depl": ("ClassWeighting", "ClassWeighting"),
        "adsh": ("ClassWeighting", "ClassWeighting"),
        "crest": ("CReSTWeighting", "CReSTWeighting"),
        "simis": ("SimiSWeighting", "SimiSWeighting"),
        "ga_cps": ("ClassWeighting", "ClassWeighting"),
        "dhc_stac": ("DiffDW", "DistDW"),
        "micd": ("DiffDW", "DistDW"),
    }
    assert sorted(weightings) == sorted(TWO_BRANCH_ROWS)
    for name, expected in weightings.items():
        cls = METHODS[name]
        assert issubclass(cls, CoTraining) and issubclass(cls.Settings, CoTrainingSettings)
        assert core <= {f.name for f in dataclasses.fields(cls.Settings)}
        method = make(name)
        assert (type(method.weighting_a).__name__, type(method.weighting_b).__name__) == expected
    # only MICD has masking, CFC and CMD; CLD has none of MICD's keys (issue 28)
    micd_only = {"masking", "mask_ratio", "mask_block", "mcpc", "cfc", "cmd", "heterogeneous", "feature_weights"}
    for name in TWO_BRANCH_ROWS[:-1]:
        assert not micd_only & {f.name for f in dataclasses.fields(METHODS[name].Settings)}, name
    assert not {"weighting_a", "weighting_b"} & {f.name for f in dataclasses.fields(METHODS["cld"].Settings)}
    with pytest.raises(ValueError, match=r"cld has no setting 'masking'.*cld's settings: beta_max, confidence_every"):
        make("cld", masking=True)


def test_cps_targets_are_the_other_networks_argmax(monkeypatch):
    import micd.methods.cotraining as cotraining_module

    targets_from = []
    monkeypatch.setattr(
        cotraining_module, "hard_labels", lambda logits: targets_from.append(logits) or logits.argmax(1)
    )
    method = make("cps")
    outputs = {}
    for name in ("student_a", "student_b"):
        getattr(method, name).register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, o))
    method.training_step(tiny_batch(), Progress(5, 10, 3))
    assert len(targets_from) == 2
    assert targets_from[0] is outputs["student_b"]  # A learns from B's clean prediction
    assert targets_from[1] is outputs["student_a"]  # and B from A's


def test_mean_teacher_consistency_is_on_the_unlabelled_half_against_the_teacher():
    method = make("mean_teacher")
    terms = method.training_step(tiny_batch(), Progress(epoch=9, max_epochs=10, iteration=4))
    assert {"sup", "consistency"} <= set(terms.losses) and set(terms.diagnostics) == {"beta"}
    # a teacher identical to the student, with no noise and no dropout, gives no consistency loss
    method = make("mean_teacher", noise_std=0.0)
    method.teacher.load_state_dict(method.student.state_dict())
    method.student.eval()
    terms = method.training_step(tiny_batch(), Progress(epoch=9, max_epochs=10, iteration=4))
    assert terms.losses["consistency"].item() == pytest.approx(0.0, abs=1e-10)


def test_uamt_masks_out_uncertain_voxels():
    import math as _math

    method = make("uamt")
    batch = tiny_batch()
    unlabelled = batch.image[2:]
    mean, entropy = method.uncertainty(unlabelled)
    assert mean.shape == (2, NUM_CLASSES, 16, 16, 16) and entropy.shape == (2, 1, 16, 16, 16)
    assert torch.allclose(mean.sum(1), torch.ones(2, 16, 16, 16), atol=1e-5)
    assert method.teacher.training  # DHC's teacher: dropout on and batch statistics
    # DHC's threshold: (0.75 + 0.25 ramp(epoch)) ln 2, whatever the number of classes
    early, late = (method.uncertainty_threshold(Progress(e, 10, 0)) for e in (0, 10))
    assert early == pytest.approx((0.75 + 0.25 * _math.exp(-5)) * _math.log(2))
    assert late == pytest.approx(_math.log(2))
    assert make("uamt", threshold_classes=0).uncertainty_threshold(Progress(10, 10, 0)) == pytest.approx(
        _math.log(NUM_CLASSES)
    )
    # with a threshold of zero every voxel is uncertain and the consistency vanishes
    method.uncertainty_threshold = lambda progress: 0.0
    logits = torch.randn(2, NUM_CLASSES, 16, 16, 16)
    assert method.consistency(logits, unlabelled, Progress(1, 10, 0)).item() == 0.0
    # in eval mode the teacher keeps its statistics and only its dropout runs for the passes
    frozen = make("uamt", teacher_mode="eval")
    assert not frozen.teacher.training
    frozen.uncertainty(unlabelled)
    assert not any(m.training for m in frozen.teacher.modules())


def test_uamt_ema_follows_the_epoch_as_dhc_or_the_iteration():
    for step, progress, expected in (("epoch", Progress(2, 10, 500), 2 / 3), ("iteration", Progress(2, 10, 3), 0.75)):
        method = make("uamt", ema_step=step)
        before = [p.clone() for p in method.teacher.parameters()]
        with torch.no_grad():
            for p in method.student.parameters():
                p.add_(1.0)
        method.after_step(progress)
        for t, old, s_ in zip(method.teacher.parameters(), before, method.student.parameters()):
            assert torch.allclose(t, expected * old + (1 - expected) * s_)


def test_cld_weights_rare_classes_and_crops_uniformly_as_dhc():
    method = make("cld", weight_power=0.5)
    counts = torch.tensor([1000.0, 250.0, 40.0, 10.0], dtype=torch.float64)
    method.initialise(counts)
    expected = torch.tensor([1.0, 2.0, 5.0, 10.0])
    assert torch.allclose(method.weighting_a.weights, expected, atol=1e-4)
    assert method.weighting_b is method.weighting_a
    before = method.weighting_a.weights.clone()
    terms = method.training_step(tiny_batch(), Progress(5, 10, 3))
    assert set(terms.losses) == {"loss", "sup", "cps"} and set(terms.diagnostics) == {"beta"}
    assert torch.equal(method.weighting_a.weights, before)  # fixed, not updated from predictions
    assert method.patch_label_probabilities() is None  # DHC's train_cld.py crops uniformly
    sampled = make("cld", weight_power=0.5, weighted_sampling=True)
    sampled.initialise(counts)
    assert sampled.patch_label_probabilities() == pytest.approx({0: 1.0, 1: 2.0, 2: 5.0, 3: 10.0}, abs=1e-4)


@pytest.mark.parametrize("name", TWO_BRANCH_ROWS[:-1])
def test_methods_without_teachers_build_and_update_none(name):
    method = make(name)
    assert method.teachers() == [] and not hasattr(method, "teacher_a")
    assert not any("teacher" in key for key in method.state_dict())
    method.after_step(Progress(1, 10, 1))  # nothing to update
    assert len(make("micd").teachers()) == 2
    assert make("micd", cmd=False).teachers() == []
    assert len(make("micd", cmd=False, inference="teachers").teachers()) == 2


def conv_weight_std(net: nn.Module) -> float:
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv3d) and m.weight.shape[1] > 1)
    return conv.weight.std().item()


def test_networks_are_initialised_as_dhcs_scripts():
    torch.manual_seed(0)
    from micd.nets import VNet
    from micd.nets.vnet import initialise

    # kaiming: std sqrt(2 / fan_in); xavier: std sqrt(2 / (fan_in + fan_out)); biases untouched
    net = VNet(NUM_CLASSES, n_filters=8, init="default")
    conv = net.encoder[1][0]  # 16 -> 16 channels, 3x3x3
    bias = conv.bias.clone()
    transposed = net.up[0][0].weight.clone()
    initialise(net, "kaiming")
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 27)) ** 0.5, rel=0.1)
    assert torch.equal(conv.bias, bias) and torch.equal(net.up[0][0].weight, transposed)
    initialise(net, "xavier")
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 27 + 16 * 27)) ** 0.5, rel=0.1)
    # which rows use which: DHC Kaiming twice, CPS/CLD Kaiming + Xavier, UA-MT and the V-Nets PyTorch's
    inits = {
        "dhc": ("kaiming", "kaiming"),
        "micd": ("kaiming", "kaiming"),
        "cps": ("kaiming", "xavier"),
        "cld": ("kaiming", "xavier"),
        "depl": ("kaiming", "xavier"),
        "adsh": ("kaiming", "xavier"),
        "crest": ("kaiming", "xavier"),
        "simis": ("kaiming", "xavier"),
    }
    for name, pair in inits.items():
        s = make(name).settings
        assert (s.init_a, s.init_b) == pair
    for name in ("supervised", "fully", "uamt", "mean_teacher"):
        assert make(name).settings.init == "default"
    for name in ("urpc", "acisis"):  # URPC's UNet initialises itself, Basak et al. re-initialise
        assert make(name).settings.init == "kaiming"
    with pytest.raises(ValueError, match="kaiming"):
        VNet(NUM_CLASSES, n_filters=2, init="he")


def test_cfc_kl_is_summed_over_channels_and_averaged_over_voxels():
    # two voxels, two channels; softmax of (0, ln 3) is (1/4, 3/4), of (0, 0) is (1/2, 1/2)
    a = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]).reshape(1, 2, 2)
    b = torch.zeros(1, 2, 2)
    kl_ab = [0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5), 0.0]
    kl_ba = [0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), 0.0]
    assert feature_distance(a, b, "kl_one_sided").item() == pytest.approx(sum(kl_ab) / 2, abs=1e-6)
    assert feature_distance(a, b, "kl").item() == pytest.approx((sum(kl_ab) + sum(kl_ba)) / 4, abs=1e-6)
    # summed over channels: C times the channel mean the "mse" form used to take
    wide = torch.randn(1, 64, 4, 4, 4)
    assert (
        feature_distance(wide, wide.roll(1, 1), "kl").item()
        > 20 * feature_distance(wide, wide.roll(1, 1), "mse").item()
    )


@pytest.mark.parametrize("direction", ["masked_prediction", "clean_prediction"])
def test_mcpc_direction_decides_which_prediction_learns(direction, monkeypatch):
    import micd.methods.cotraining as cotraining_module

    calls = []
    monkeypatch.setattr(
        cotraining_module,
        "weighted_cross_entropy",
        lambda logits, target, weight=None: calls.append((logits, target)) or logits.sum() * 0,
    )
    method = make("micd", mcpc_direction=direction, cmd=False, cfc=False)
    outputs = {}
    for name in ("student_a", "student_b"):
        getattr(method, name).register_forward_hook(lambda m, i, o, name=name: outputs.setdefault(name, []).append(o))
    method.training_step(tiny_batch(), Progress(5, 10, 3))
    (clean_a, masked_a), (clean_b, masked_b) = outputs["student_a"], outputs["student_b"]
    masked_a, masked_b = masked_a[0], masked_b[0]  # the masked passes return (logits, features)
    (learner_a, target_a), (learner_b, target_b) = calls
    if direction == "masked_prediction":  # CE(q_A, argmax p_B) + CE(q_B, argmax p_A)
        assert learner_a is masked_a and torch.equal(target_a, clean_b.argmax(1))
        assert learner_b is masked_b and torch.equal(target_b, clean_a.argmax(1))
    else:  # Eq. (3) literally: CE(p_A, argmax q_B) + CE(p_B, argmax q_A)
        assert learner_a is clean_a and torch.equal(target_a, masked_b.argmax(1))
        assert learner_b is clean_b and torch.equal(target_b, masked_a.argmax(1))
    with pytest.raises(ValueError, match="mcpc_direction"):
        make("micd", mcpc_direction="both")


def test_masked_passes_leave_batchnorm_running_statistics_to_the_clean_pass():
    method = build_method("micd", {}, NUM_CLASSES, n_filters=2, dropout=0.0).train()  # no dropout: reproducible
    batch = tiny_batch()
    reference = build_method("micd", {}, NUM_CLASSES, n_filters=2, dropout=0.0).train()  # a clean forward only
    reference.load_state_dict(method.state_dict())
    method.training_step(batch, Progress(5, 10, 3))
    reference.student_a(batch.image)
    reference.student_b(batch.image)
    for (key, ours), theirs in zip(method.state_dict().items(), reference.state_dict().values()):
        if "running" in key or "num_batches" in key:
            assert torch.equal(ours, theirs), key
    # and the masked pass does normalise with the batch's own statistics (training mode)
    from micd.methods.micd import frozen_batchnorm_statistics

    net = method.student_a
    with frozen_batchnorm_statistics(net):
        masked = net(batch.image * 0.5)
    assert not torch.allclose(masked, net.eval()(batch.image * 0.5))


@pytest.mark.parametrize("name", ["adsh", "depl"])
def test_model_files_leave_out_training_only_state_and_still_predict(name):
    method = make(name)
    for i in range(3):
        method.training_step(tiny_batch(seed=i), Progress(1, 10, i))
    saved = method.inference_state_dict()
    assert not any(k.startswith(method.training_only_state) for k in saved)
    assert set(method.state_dict()) - set(saved)  # something was left out
    fresh = build_method(name, {}, NUM_CLASSES, n_filters=2)
    fresh.load_inference_state_dict(saved)
    x = tiny_batch().image
    assert torch.allclose(fresh.eval().predict(x), method.eval().predict(x))
    del saved[next(k for k in saved if k.startswith("student_a"))]
    with pytest.raises(RuntimeError, match="lacks"):
        fresh.load_inference_state_dict(saved)
