"""Every method's settings hold only keys that change what it computes (issue 28).

For every registered method and each key of its ``Settings``: set to another valid value, the
first two training steps of the golden record's fixture (:func:`test_method_golden.run_case`)
give other losses, another final state (weights, class weightings, banks) or other predictions,
or, for a key that only steers the engine, other patch sampling. Every key a method does not
have is refused, with the method named.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import test_method_golden as golden

from micd.errors import SettingsError
from micd.methods import METHODS, build_method

# settings each walk starts from, where a key's effect only shows within two steps on top of them
BASES: dict[str, dict] = {
    # the rates are refreshed after every step (not once an epoch) from the fresh scores alone,
    # so their settings act at step 2; two of the four classes keep their rank, so the penalties act
    "acisis": {"update_every": 1, "top_classes": 2, "indicator_momentum": 0.0},
    # the banks are updated every step, so the momentum acts at step 2
    "cld": {"confidence_every": 1},
    # three slots (of the 6 unlabelled cases, DHC's 6 // 4 is one, never filled): the bank holds
    # two maps after step 1 and the thresholds come from them at step 2
    "adsh": {"bank_divisor": 2},
    # every voxel teaches, so the debiasing acts
    "depl": {"confidence_threshold": 0.0},
    # an untrained teacher is unsure of nearly every voxel at ln 2: ln 4 lets some through
    "uamt": {"threshold_classes": 0},
    # the record's epoch 6 is before STAC's epoch 40: its unlabelled patches are transformed from epoch 0
    "dhc_stac": {"unlabelled_start_epoch": 0},
}

# values to try, the first unlike the default, for keys that no rule below changes into
# another valid one or whose rule's value is too small to show
CHOICES: dict[str, list] = {
    "init": ["xavier", "kaiming"],
    "init_a": ["xavier", "kaiming"],
    "init_b": ["xavier", "kaiming"],
    "weighting_a": ["uniform", "distdw"],
    "weighting_b": ["uniform", "distdw"],
    "teacher_mode": ["eval", "train"],
    "ema_step": ["iteration", "epoch"],
    "memory_keeps": ["highest"],
    "mcpc_direction": ["masked_prediction", "clean_prediction"],
    "feature_distance": ["cosine"],
    "inference": ["teachers"],
    "rampup_epochs": [20.0],
    "bank_slots": [2],
    "width": [4],
    "feature_weights": [[1.0, 0.0, 0.0, 0.0]],
    "dropout": [[0.0, 0.0, 0.0, 0.0]],
    "dice_smooth": [1.0],
    "vat_dice_smooth": [1.0],
}
# per method where the rule's value is not valid or shows nothing in two steps
METHOD_CHOICES: dict[tuple[str, str], object] = {
    ("depl", "confidence_threshold"): 0.5,
    ("depl", "tau"): 50.0,
    ("ssnet", "memory_per_class"): 4,
    ("ga_cps", "cross_top_percent"): 50.0,
    ("dhc_stac", "unlabelled_start_epoch"): 40,
    ("dhc_stac", "deformed_classes"): [1, 2],
    ("dhc_stac", "distance_pairs"): "own",
}


def alternative(method: str, key: str, value: object) -> object:
    """Another valid value of ``key``: named above, the negation of a switch, half of a fraction,
    twice another number, 1 (an integer) or 0.5 for a zero."""
    if (method, key) in METHOD_CHOICES:
        return METHOD_CHOICES[method, key]
    if key in CHOICES:
        return next(choice for choice in CHOICES[key] if choice != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        if not value:
            return 1 if isinstance(value, int) else 0.5
        return value / 2 if isinstance(value, float) and 0 < value < 1 else type(value)(value * 2)
    raise AssertionError(f"{method}.{key}: no other value known for {value!r}; add one to CHOICES")


def settings_keys(method: str) -> list[str]:
    return [f.name for f in dataclasses.fields(METHODS[method].Settings)]


def walk() -> list[tuple[str, str]]:
    return [(method, key) for method in sorted(METHODS) for key in settings_keys(method)]


@cache
def computed(method: str, settings: tuple) -> dict:
    """What two steps of ``method`` with these settings compute (float32: the walk looks for any
    change, not for values), and the patch sampling it asks the engine for."""
    values = dict(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(golden, "STEPS", 2)
        result = golden.run_case(method, values, "float32")
    built = build_method(method, values, golden.NUM_CLASSES, n_filters=2)
    built.initialise(golden.torch.tensor([5000.0, 2000.0, 800.0, 100.0]), unlabelled_cases=6)
    return {key: result[key] for key in ("steps", "state", "predict")} | {"sampling": built.patch_label_probabilities()}


def frozen(settings: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))


@pytest.mark.parametrize(("method", "key"), walk())
def test_every_setting_changes_what_its_method_computes(method, key):
    base = BASES.get(method, {})
    defaults = dataclasses.asdict(METHODS[method].Settings(**base))
    changed = {**base, key: alternative(method, key, defaults[key])}
    assert changed[key] != defaults[key]
    before, after = computed(method, frozen(base)), computed(method, frozen(changed))
    differs = [part for part in before if before[part] != after[part]]
    assert differs, f"{method}: {key}={changed[key]!r} (default {defaults[key]!r}) changes nothing in two steps"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_keys_of_other_methods_are_refused_naming_the_method(method):
    own = set(settings_keys(method))
    foreign = sorted({key for other in METHODS for key in settings_keys(other)} - own)
    for key in foreign:
        with pytest.raises(SettingsError, match=rf"^{method} has no setting '{key}'"):
            build_method(method, {key: None}, golden.NUM_CLASSES, n_filters=2)


# MICD's settings as every two-branch row carried them until issue 28, with each row's own values
OLD_MICD = {
    **dict(mcpc=True, cfc=True, cmd=True, masking=True, mask_ratio=0.5, mask_block=16),
    **dict(mcpc_direction="clean_prediction", feature_distance="kl", feature_weights=[0.25] * 4),
    **dict(heterogeneous=True, weighting_a="diffdw", weighting_b="distdw", ema_decay=0.99, inference="students"),
}
OLD_ROWS = {
    "dhc": {},
    "distdw": {"weighting_a": "distdw"},
    "diffdw": {"weighting_b": "diffdw"},
    **dict.fromkeys(("cps", "depl", "adsh", "cld", "crest", "simis"), {"heterogeneous": False}),
}


@pytest.mark.parametrize("method", sorted(OLD_ROWS))
def test_a_model_file_saved_with_the_retired_settings_still_builds_the_same_method(method):
    current = dataclasses.asdict(METHODS[method].Settings())
    saved = {**OLD_MICD, "masking": False, "cfc": False, "cmd": False, **OLD_ROWS[method], **current}
    with pytest.raises(SettingsError, match=f"^{method} has no setting 'cfc'"):
        build_method(method, saved, golden.NUM_CLASSES, n_filters=2)  # from a configuration: refused
    built = build_method(method, saved, golden.NUM_CLASSES, n_filters=2, saved=True)
    assert dataclasses.asdict(built.settings) == current
    with pytest.raises(SettingsError, match=f"this {method} model was trained with settings .*cmd: True"):
        build_method(method, {**saved, "cmd": True}, golden.NUM_CLASSES, n_filters=2, saved=True)
