"""The training loop's settings and their allowed values: one owner for the train section of
config/schema.yaml (tests/config/test_schema_owner.py holds the two equal), read by the loop,
the config check, the model file and inference without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from micd.errors import SettingsError


@dataclass
class TrainSettings:
    """Settings of the training loop; defaults are DHC's protocol (docs/protocol.md)."""

    max_epochs: int = 200  # DHC's -ep: its loop trains epochs 0 .. max_epochs
    iterations_per_epoch: int | None = None  # None: one pass over the unlabelled set
    lr: float = 3e-2
    momentum: float = 0.9
    weight_decay: float = 3e-5
    nesterov: bool = True
    poly_power: float = 0.9
    n_filters: int = 32
    dropout: float = 0.5  # Dropout3d on the bottleneck and the last decoder map
    patch_size: list[int] = field(default_factory=lambda: [64, 128, 128])
    batch_labelled: int = 2
    batch_unlabelled: int = 2
    samples_per_volume: int = 1
    queue_length: int = 16
    num_workers: int = 0
    class_balanced: bool = False  # labelled patches centred on every class equally often
    # the protocol's random flips of H and W on every patch; false: DHC's published runs, trained
    # without them (its flips discarded their result until DHC commit 3359f9f, docs/protocol.md)
    flips: bool = True
    validate_every: int = 10  # epochs: after every epoch whose index is a multiple of it, as DHC
    validation: str = "centre_crop"  # DHC: one centre crop per eval case; or "sliding_window"
    early_stop_patience: int | None = 50  # epochs without a better eval Dice; None: never stop
    window_stride: list[int] = field(default_factory=lambda: [16, 32, 32])
    checkpoint_every: int = 100  # iterations; a checkpoint is also written after every epoch
    channels_last: bool = True  # channels-last 3-D tensors: faster convolutions (docs/benchmark.md)
    compile: bool = False  # torch.compile every network (nn.Module.compile: state dicts keep their keys)
    cudnn_benchmark: bool = True  # on a GPU, let cuDNN pick the fastest kernels for the fixed patch size
    # mixed precision on a GPU, never on the CPU: "fp16" (DHC: autocast and a gradient scaler),
    # "bf16", "auto" (bf16 where supported) or "off"
    amp: str = "fp16"
    max_bad_steps: int = 20  # consecutive steps with a non-finite loss or gradient before the run stops
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
        problems = train_setting_problems(values)
        if problems:
            raise SettingsError("; ".join(f"train.{key}: {problem}" for key, problem in problems.items()))
        settings = cls(**values)
        if settings.max_epochs < 1:
            raise SettingsError(f"train.max_epochs must be at least 1 (DHC's -ep), got {settings.max_epochs}")
        if settings.validation not in VALIDATION_MODES:
            raise SettingsError(
                f"train.validation must be one of {list(VALIDATION_MODES)}, got {settings.validation!r}"
            )
        return settings


VALIDATION_MODES = ("centre_crop", "sliding_window")
# the least value of each numeric train setting, and whether it is excluded; config/schema.yaml's
# train section states the same bounds (tests/bad_inputs/test_data_config.py holds them equal)
TRAIN_MINIMUMS: dict[str, tuple[float, bool]] = {
    "max_epochs": (1, False),
    "iterations_per_epoch": (1, False),
    "lr": (0, True),
    "momentum": (0, False),
    "weight_decay": (0, False),
    "poly_power": (0, False),
    "n_filters": (1, False),
    "dropout": (0, False),
    "batch_labelled": (1, False),
    "batch_unlabelled": (1, False),
    "samples_per_volume": (1, False),
    "queue_length": (1, False),
    "num_workers": (0, False),
    "validate_every": (1, False),
    "early_stop_patience": (1, False),
    "checkpoint_every": (1, False),
    "max_bad_steps": (1, False),
}


def train_setting_problems(values: Mapping[str, Any]) -> dict[str, str]:
    """Key -> what is wrong, for train settings of the wrong type or below their least value."""
    from micd.setting_types import type_problems

    problems = type_problems(TrainSettings, values)
    for key, (least, excluded) in TRAIN_MINIMUMS.items():
        value = values.get(key)
        if key in problems or value is None:
            continue
        if value < least or (excluded and value == least):
            problems[key] = f"got {value!r}, expected a value {'above' if excluded else 'of at least'} {least}"
    if "dropout" not in problems and values.get("dropout", 0) > 1:
        problems["dropout"] = f"got {values['dropout']!r}, expected a probability from 0 to 1"
    return problems


# settings that change how a run executes, not what it computes: a checkpoint written under
# other values of these is still this run's (e.g. resumed on another node or device)
EXECUTION_SETTINGS = frozenset(
    {"checkpoint_every", "num_workers", "compile", "cudnn_benchmark", "channels_last", "device"}
)


AMP_MODES = ("fp16", "bf16", "auto", "off")
