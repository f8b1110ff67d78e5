"""Values of the configuration that the schema alone cannot judge (part of :mod:`micd.config.check`).

- each method setting's type, from its method's settings class (``mask_block: "8"``);
- the train settings of every layer: a data set's ``train`` and ``method_train`` entries take the
  schema's ``train`` section (types and bounds) as the top-level ``train`` does;
- a patch larger than the preprocessed grid, where the grid is fixed (``preprocess.mode: grid``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema

from micd.setting_types import type_problems


def method_setting_type_problems(config: Mapping[str, Any], methods: Mapping[str, Any]) -> list[str]:
    """``method_settings.micd.mask_block: micd setting 'mask_block' got '8' (str), expected an integer``."""
    problems = []
    for name, settings in (config.get("method_settings") or {}).items():
        if name in methods and isinstance(settings, Mapping):
            for key, problem in type_problems(methods[name].Settings, settings).items():
                problems.append(f"method_settings.{name}.{key}: {name} setting {key!r} {problem}")
    for name, variant in (config.get("variants") or {}).items():
        method = (variant or {}).get("method")
        settings = (variant or {}).get("settings")
        if method in methods and isinstance(settings, Mapping):
            for key, problem in type_problems(methods[method].Settings, settings).items():
                problems.append(f"variants.{name}.settings.{key}: {method} setting {key!r} {problem}")
    return problems


def _train_layers(config: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, dataset in (config.get("datasets") or {}).items():
        if isinstance(dataset, Mapping) and "train" in dataset:
            yield f"datasets.{name}.train", dataset["train"]
    for name, settings in (config.get("method_train") or {}).items():
        yield f"method_train.{name}", settings


def train_layer_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The schema's ``train`` section applied to every layer that overrides it (unknown keys are
    reported by the key check)."""
    train_schema = {**schema["properties"]["train"], "additionalProperties": True}
    validator = jsonschema.Draft202012Validator(train_schema)
    problems = []
    for where, settings in _train_layers(config):
        for error in validator.iter_errors(settings if settings is not None else {}):
            path = ".".join(map(str, error.absolute_path))
            problems.append(f"{where}{'.' + path if path else ''}: {error.message}")
    return sorted(problems)


def patch_grid_problems(config: Mapping[str, Any], schema: Mapping[str, Any], default_patch: list[int]) -> list[str]:
    """A train patch larger than a data set's fixed preprocessed grid, naming both sizes."""
    preprocess_schema = schema["properties"]["preprocess"]["properties"]
    top_preprocess = config.get("preprocess") or {}
    top_patch = (config.get("train") or {}).get("patch_size", default_patch)
    problems = []
    for name, dataset in (config.get("datasets") or {}).items():
        own = (dataset or {}).get("preprocess") or {}
        mode = own.get("mode", top_preprocess.get("mode", preprocess_schema["mode"]["default"]))
        grid = own.get("grid", top_preprocess.get("grid", preprocess_schema["grid"]["default"]))
        if mode != "grid" or not _sizes(grid):
            continue
        dataset_patch = ((dataset or {}).get("train") or {}).get("patch_size", top_patch)
        patches = {"train.patch_size": dataset_patch}
        for method, settings in (config.get("method_train") or {}).items():
            if isinstance(settings, Mapping) and "patch_size" in settings:
                patches[f"method_train.{method}.patch_size"] = settings["patch_size"]
        for where, patch in patches.items():
            if _sizes(patch) and any(p > g for p, g in zip(patch, grid)):
                problems.append(
                    f"datasets.{name}: {where} {list(patch)} is larger than the preprocessed grid {list(grid)} "
                    "(D, H, W); expected a patch at most the grid along every axis"
                )
    return problems


def _sizes(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) for v in value)


def value_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every problem of this module's kinds, one line each."""
    from micd.methods import METHODS
    from micd.settings import TrainSettings

    return (
        method_setting_type_problems(config, METHODS)
        + train_layer_problems(config, schema)
        + patch_grid_problems(config, schema, TrainSettings().patch_size)
    )
