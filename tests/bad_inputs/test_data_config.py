"""Configurations that used to pass the config check and fail at the first training step, or later
(issue 35 item 6): each is refused at load, by the config check and by ``snakemake -n``, naming
the key, the value and what was expected."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from config_helpers import DEFAULT, SCHEMA, problems_of
from workflow_helpers import copy_workflow, dry_run

from micd.config.check import ConfigError, check_config, check_config_file
from micd.settings import TRAIN_MINIMUMS, TrainSettings, train_setting_problems


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"method_settings.micd.mask_block": "8"},
            "method_settings.micd.mask_block: micd setting 'mask_block' got '8' (str), expected an integer",
        ),
        (
            {"method_settings.micd.masking": "yes"},
            "method_settings.micd.masking: micd setting 'masking' got 'yes' (str), expected true or false",
        ),
        (
            {"variants.half": {"method": "micd", "settings": {"mask_ratio": "half"}}},
            "variants.half.settings.mask_ratio: micd setting 'mask_ratio' got 'half' (str), expected a number",
        ),
        (
            {"method_settings.micd.feature_weights": [0.5, "x"]},
            "expected a list of a number",
        ),
        ({"method_train.micd": {"lr": -0.01}}, "method_train.micd.lr: -0.01 is less than or equal to the minimum of 0"),
        ({"datasets.synthetic.train": {"max_epochs": "many"}}, "datasets.synthetic.train.max_epochs: 'many' is not of"),
        ({"method_train.supervised": {"batch_labelled": 0}}, "method_train.supervised.batch_labelled: 0 is less than"),
    ],
    ids=["mask_block_text", "bool_text", "variant_setting", "list_item", "negative_lr", "epochs_text", "zero_batch"],
)
def test_a_setting_of_the_wrong_type_or_out_of_bounds_is_named_at_load(changes, expected) -> None:
    assert expected in problems_of(changes)


def test_a_patch_larger_than_the_grid_is_caught_at_load_naming_both_sizes() -> None:
    message = problems_of({"train.patch_size": [32, 96, 48]})
    assert "datasets.synthetic: train.patch_size [32, 96, 48] is larger than the preprocessed grid [32, 64, 64]" in (
        message
    )
    message = problems_of({"method_train.micd": {"patch_size": [48, 48, 48]}})
    assert "method_train.micd.patch_size [48, 48, 48] is larger than the preprocessed grid [32, 64, 64]" in message


def test_a_patch_is_not_held_to_a_grid_that_varies_by_case() -> None:
    """In half_inplane and spacing modes each case has its own grid: micd train checks those."""
    config = copy.deepcopy(DEFAULT)
    config["preprocess"]["mode"] = "half_inplane"
    config["train"]["patch_size"] = [64, 96, 96]
    check_config(config, SCHEMA)


def test_the_train_bounds_in_code_are_the_schemas() -> None:
    """micd train checks --train-settings with TRAIN_MINIMUMS, the config check with the schema."""
    train = yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]
    from_schema = {
        key: (spec.get("exclusiveMinimum", spec.get("minimum")), "exclusiveMinimum" in spec)
        for key, spec in train.items()
        if "minimum" in spec or "exclusiveMinimum" in spec
    }
    assert from_schema == TRAIN_MINIMUMS


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"lr": -0.1}, "got -0.1, expected a value above 0"),
        ({"lr": "fast"}, "got 'fast' (str), expected a number"),
        ({"patch_size": [16, "16", 16]}, "expected a list of an integer"),
        ({"dropout": 1.5}, "expected a probability from 0 to 1"),
    ],
)
def test_train_settings_of_the_wrong_type_or_bounds_are_named(values, expected) -> None:
    (key,) = values
    assert expected in train_setting_problems(values)[key]
    with pytest.raises(ValueError, match=f"train.{key}: "):
        TrainSettings.from_dict(values)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "config/config.yaml: expected a YAML mapping of settings (key: value lines), it is empty"),
        ("ratios: [5, 10\nseeds: [0]\n", "config/config.yaml: not valid YAML at line 2, column 6"),
        ("- 5\n- 10\n", "config/config.yaml: expected a YAML mapping of settings (key: value lines), found list"),
    ],
    ids=["empty", "syntax_error", "list"],
)
def test_a_broken_defaults_file_is_named(tmp_path: Path, monkeypatch, content: str, expected: str) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_config_file("config/config.yaml")
    assert expected in str(info.value)


@pytest.mark.workflow
def test_snakemake_n_stops_on_a_method_setting_of_the_wrong_type(tmp_path: Path, snapshot, assert_unchanged) -> None:
    root = copy_workflow(tmp_path / "root")
    (root / "mine.yaml").write_text("method_settings:\n  micd:\n    mask_block: '8'\n")
    before = snapshot(root)
    result = dry_run(root, "--configfile", "mine.yaml")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "Error: 1 problem in the configuration:",
        "  method_settings.micd.mask_block: micd setting 'mask_block' got '8' (str), expected an integer",
    ]
    assert_unchanged(root, before, exclude=(".snakemake",))


@pytest.mark.workflow
def test_snakemake_n_names_an_empty_defaults_file(tmp_path: Path) -> None:
    root = copy_workflow(tmp_path / "root")
    (root / "config" / "config.yaml").write_text("")
    result = dry_run(root)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "Error: config/config.yaml: expected a YAML mapping of settings (key: value lines), it is empty"
    )
