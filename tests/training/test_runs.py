"""Resolving a run (micd.training.runs): the one place the rules, `micd train` and bench/ take a run's
method, settings, train settings and case lists from."""

from __future__ import annotations

from pathlib import Path

import yaml
from snakemake.utils import update_config

from micd.training.runs import (
    first_run_dataset,
    layered_config,
    method_spec,
    resolve_run,
    sensitivity_variants,
    training_cases,
    variants,
)

ROOT = Path(__file__).resolve().parents[2]

CONFIG = {
    "train": {"lr": 0.01, "max_epochs": 10, "batch_labelled": 2},
    "datasets": {"amos": {"train": {"max_epochs": 20}}, "plain": {}},
    "method_settings": {"micd": {"mask_ratio": 0.5, "mask_block": 16, "ema_decay": 0.9}, "cld": {"beta_max": 3.0}},
    "method_train": {"micd": {"lr": 0.02}, "mine": {"lr": 0.03}, "fully": {"batch_labelled": 4}},
    "variants": {"mine": {"method": "micd", "settings": {"mask_ratio": 0.3}}},
    "sensitivity": {"mask_ratios": [0.3, 0.5], "mask_blocks": [8, 16]},
}


def test_a_method_takes_its_configured_settings_and_a_variant_adds_its_own() -> None:
    assert method_spec(CONFIG, "cld") == ("cld", {"beta_max": 3.0})
    assert method_spec(CONFIG, "dhc") == ("dhc", {})
    micd = CONFIG["method_settings"]["micd"]
    assert method_spec(CONFIG, "mine") == ("micd", {**micd, "mask_ratio": 0.3})
    assert method_spec(CONFIG, "micd_mcpc_cfc") == ("micd", {**micd, "cmd": False})  # built in
    assert method_spec(CONFIG, "micd_mask30_block8") == ("micd", {**micd, "mask_ratio": 0.3, "mask_block": 8})


def test_the_sensitivity_grid_names_the_configured_cell_micd() -> None:
    grid = sensitivity_variants(CONFIG)
    assert sorted(grid) == ["micd", "micd_mask30_block16", "micd_mask30_block8", "micd_mask50_block8"]
    assert "micd" not in variants(CONFIG)  # the configured cell is the method itself
    assert sensitivity_variants({k: v for k, v in CONFIG.items() if k != "sensitivity"}) == {}


def test_train_settings_layer_top_level_data_set_method_then_variant() -> None:
    run = resolve_run(CONFIG, "amos", "mine")
    assert run.method == "micd" and run.name == "mine"
    assert run.train_settings == {"lr": 0.03, "max_epochs": 20, "batch_labelled": 2}
    assert resolve_run(CONFIG, "amos", "micd_mcpc_cfc").train_settings["lr"] == 0.02  # its method's
    assert resolve_run(CONFIG, "plain", "dhc").train_settings == CONFIG["train"]
    assert resolve_run(CONFIG, "plain", "fully").train_settings["batch_labelled"] == 4


def test_the_upper_bound_trains_on_every_case_and_the_rest_on_the_split() -> None:
    train, labelled, unlabelled = ["a", "b", "c"], ["a"], ["b", "c"]
    assert training_cases("fully", train, labelled, unlabelled) == (train, [])
    assert training_cases("dhc", train, labelled, unlabelled) == (labelled, unlabelled)
    assert resolve_run(CONFIG, "plain", "fully").trains_on_every_case
    assert not resolve_run(CONFIG, "plain", "mine").trains_on_every_case


def test_layered_config_merges_as_snakemake_merges_config_files() -> None:
    files = [ROOT / "config" / name for name in ("config.yaml", "benchmark.yaml", "benchmark_gpu.yaml")]
    expected = yaml.safe_load(files[0].read_text())
    for path in files[1:]:
        update_config(expected, yaml.safe_load(path.read_text()))
    assert layered_config(files) == expected


def test_the_first_run_dataset_is_the_first_selected_else_the_first_configured() -> None:
    assert first_run_dataset(CONFIG) == "amos"
    assert first_run_dataset({**CONFIG, "run_datasets": ["plain"]}) == "plain"
