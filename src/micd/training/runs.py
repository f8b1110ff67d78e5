"""What one training run is, resolved from the workflow's configuration.

A run is named by the workflow's ``{method}`` wildcard: a registered method (``dhc``), a
built-in MICD variant (the ablation rows, ``micd_no_cmd``), a cell of the mask-sensitivity grid
(``micd_mask30_block8``) or a variant of the configuration's ``variants``. Resolving it gives the
registered method, its settings (``method_settings`` of the method, then the variant's own), the
train settings (``train``, then the data set's ``train``, then ``method_train`` by method, then by
variant) and which case lists it trains on. The rules (rules/common.smk), ``micd train`` and the
scripts under ``bench/`` resolve runs here and nowhere else.

Only the configuration's mapping is read; nothing here needs Snakemake, so the GPU scripts can
use it on a machine without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from micd.methods import trains_on_every_case
from micd.methods.micd import builtin_variants, mask_sensitivity_variants


@dataclass(frozen=True)
class Run:
    """One run's method, settings and train settings (``name``: the method or variant name)."""

    name: str
    method: str
    method_settings: dict[str, Any]
    train_settings: dict[str, Any]

    @property
    def trains_on_every_case(self) -> bool:
        return trains_on_every_case(self.method)


def sensitivity_variants(config: Mapping[str, Any]) -> dict[str, dict]:
    """The mask-sensitivity grid (config ``sensitivity``) as named MICD variants; the cell of
    MICD's configured mask is ``micd`` itself (micd.methods.micd.mask_sensitivity_variants)."""
    grid = config.get("sensitivity") or {}
    if not isinstance(grid, Mapping) or not grid:  # a malformed grid is the schema check's to name
        return {}
    micd = (config.get("method_settings") or {}).get("micd") or {}
    ratios, blocks = (
        [v for v in grid.get(key) or [] if isinstance(v, (int, float))] for key in ("mask_ratios", "mask_blocks")
    )
    return mask_sensitivity_variants(ratios, blocks, micd)


def variants(config: Mapping[str, Any]) -> dict[str, dict]:
    """Every variant name a run may have: built-in, the sensitivity grid's, the configuration's."""
    grid = {name: v for name, v in sensitivity_variants(config).items() if name != "micd"}
    return {**builtin_variants(), **grid, **(config.get("variants") or {})}


def method_spec(config: Mapping[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """(registered method, its settings) of a method or variant name."""
    configured = config.get("method_settings") or {}
    variant = variants(config).get(name)
    if variant is None:
        return name, dict(configured.get(name) or {})
    return variant["method"], {**(configured.get(variant["method"]) or {}), **(variant.get("settings") or {})}


def train_settings(config: Mapping[str, Any], dataset: str, name: str) -> dict[str, Any]:
    """The top-level train settings, then the data set's, then the method's, then the variant's."""
    method = method_spec(config, name)[0]
    per_method = config.get("method_train") or {}
    return {
        **(config.get("train") or {}),
        **(config["datasets"][dataset].get("train") or {}),
        **(per_method.get(method) or {}),
        **(per_method.get(name) or {}),
    }


def resolve_run(config: Mapping[str, Any], dataset: str, name: str) -> Run:
    method, settings = method_spec(config, name)
    return Run(name, method, settings, train_settings(config, dataset, name))


def training_cases(
    method: str, train: Sequence[str], labelled: Sequence[str], unlabelled: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(labelled, unlabelled) cases a method trains on: the upper bound takes every training case
    as labelled and none unlabelled; every other method the split's two lists."""
    if trains_on_every_case(method):
        return list(train), []
    return list(labelled), list(unlabelled)


def first_run_dataset(config: Mapping[str, Any]) -> str:
    """The data set a single-data-set tool runs on: the first of ``run_datasets``, else of ``datasets``."""
    return (config.get("run_datasets") or list(config["datasets"]))[0]


def layered_config(files: Iterable[Path | str]) -> dict[str, Any]:
    """Configuration files merged in order as Snakemake merges ``--configfile``s: nested
    mappings key by key, anything else replaced. (The schema's defaults are not filled in.)"""

    def merge(into: dict, new: Mapping) -> dict:
        for key, value in new.items():
            into[key] = merge(dict(into.get(key) or {}), value) if isinstance(value, Mapping) else value
        return into

    config: dict[str, Any] = {}
    for path in files:
        merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config
