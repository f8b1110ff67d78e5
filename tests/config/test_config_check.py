"""Configuration mistakes are caught at workflow load, each with a short line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from config_helpers import DEFAULT, SCHEMA, problems_of
from workflow_helpers import copy_workflow, dry_run

from micd.config.check import check_config
from micd.training.runs import layered_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml", "benchmark.yaml"])
def test_the_shipped_configurations_pass(config):
    # merged as Snakemake merges them: train.patch_size of config.yaml stays under benchmark.yaml's train
    layered = layered_config([ROOT / "config" / "config.yaml", ROOT / "config" / config])
    check_config(layered, SCHEMA)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"ratio": [5]}, "ratio: unknown key; did you mean 'ratios'?"),
        (
            {"datasets.synthetic.synthetic.seeed": 3},
            "datasets.synthetic.synthetic.seeed: unknown key; did you mean 'seed'?",
        ),
        ({"train.max_epoch": 3}, "train.max_epoch: unknown key; did you mean 'max_epochs'?"),
        ({"preprocess.mod": "grid"}, "preprocess.mod: unknown key; did you mean 'mode'?"),
        ({"evaluation.blend": "hann"}, "evaluation.blend: unknown key; did you mean 'blending'?"),
        ({"datasets.synthetic.train": {"early_stop": 5}}, "datasets.synthetic.train.early_stop: no such train setting"),
        ({"method_train": {"fully": {"batch_size": 4}}}, "method_train.fully.batch_size: no such train setting"),
        ({"method_settings": {"micd": {"mask_ration": 0.3}}}, "did you mean 'mask_ratio'?"),
        ({"train.lr": -1}, "train.lr: -1 is less than or equal to the minimum of 0"),
        ({"preprocess.mode": "dhc"}, "preprocess.mode: 'dhc' is not one of ['grid', 'half_inplane', 'spacing']"),
        ({"figures.formats": ["pdf"]}, "figures.formats: ['pdf'] must include 'png'"),
        ({"figures.formats": ["png", "eps"]}, "figures.formats.1: 'eps' is not one of ['png', 'pdf', 'svg']"),
    ],
)
def test_each_kind_of_mistake_is_named_with_the_nearest_valid_name(changes, expected):
    assert expected in problems_of(changes)


def test_an_unknown_method_lists_the_registered_ones():
    from micd.methods import METHODS

    message = problems_of({"methods": ["supervised", "mcid"]})
    assert (
        "methods: 'mcid' is neither a registered method nor a variant; registered methods: "
        + ", ".join(sorted(METHODS))
        in message
    )
    assert "variants.x.method: 'nope' is not registered" in problems_of({"variants": {"x": {"method": "nope"}}})


@pytest.mark.parametrize(
    "published",
    [None, "config/published/dhc_tables.csv", ["config/published/dhc_tables.csv", "config/published/since_dhc.csv"]],
)
def test_published_results_is_one_file_a_list_of_them_or_none(published):
    check_config({**DEFAULT, "published_results": published, "published_main_methods": ["dhc", "ga_cps"]}, SCHEMA)


def test_published_results_of_another_type_or_rows_of_an_unknown_method_are_named():
    assert "published_results: 5 is not of type 'string', 'array', 'null'" in problems_of({"published_results": 5})
    message = problems_of({"published_main_methods": ["dhc", "ga-cps"]})
    assert "published_main_methods: 'ga-cps' is neither a registered method nor a variant" in message


def test_every_problem_is_reported_at_once():
    message = problems_of({"ratio": [5], "train.lr": 0})
    assert message.startswith("2 problems in the configuration:")


@pytest.mark.workflow
def test_the_workflow_stops_at_load_with_the_short_message_alone(tmp_path):
    root = copy_workflow(tmp_path / "root")
    (root / "typo.yaml").write_text("ratio: [5]\ntrain: {max_epoch: 3}\n")
    result = dry_run(root, "--configfile", "typo.yaml")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "Error: 2 problems in the configuration:",
        "  ratio: unknown key; did you mean 'ratios'?",
        "  train.max_epoch: unknown key; did you mean 'max_epochs'?",
    ]
    assert 'File "' not in result.stdout + result.stderr  # no traceback lines, no schema dump
    assert not (root / ".snakemake").exists() or not any((root / ".snakemake").rglob("*.lock"))


@pytest.mark.workflow
def test_targets_go_before_configfile_or_the_file_is_given_with_an_equals_sign(tmp_path):
    """Snakemake's --configfile takes every following word as a file and opens each before the
    workflow is read, so a target after it fails in Snakemake itself (README, "Run"); the two
    forms the README gives instead plan the target."""
    root = copy_workflow(tmp_path / "root")
    (root / "my.yaml").write_text("seeds: [1]\n")
    for args in (["figures", "--configfile", "my.yaml"], ["--configfile=my.yaml", "figures"]):
        result = dry_run(root, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "rule dice_vs_ratio:" in result.stdout and "rule table:" not in result.stdout
    misplaced = dry_run(root, "--configfile", "my.yaml", "figures")
    assert misplaced.returncode != 0
    assert "No such file or directory: 'figures'" in misplaced.stdout + misplaced.stderr


@pytest.mark.workflow
def test_a_setting_the_method_lacks_is_refused_with_its_settings_at_load(tmp_path):
    """Issue 28: CLD has none of MICD's keys; the dry run names cld, the nearest key if one is
    close, and cld's settings; a variant's settings are checked against its method alike."""
    from micd.methods import METHODS

    cld = ", ".join(sorted(f.name for f in dataclasses.fields(METHODS["cld"].Settings)))
    root = copy_workflow(tmp_path / "root")
    (root / "cld.yaml").write_text("method_settings: {cld: {masking: true}}\n")
    result = dry_run(root, "--configfile", "cld.yaml")
    assert result.returncode != 0
    assert f"  method_settings.cld.masking: cld has no setting 'masking' (cld's settings: {cld})" in (
        result.stderr.splitlines()
    )
    message = problems_of({"variants": {"mine": {"method": "cld", "settings": {"sampling_gama": 0.3}}}})
    assert (
        f"variants.mine.settings.sampling_gama: cld has no setting 'sampling_gama'; did you mean 'sampling_gamma'? "
        f"(cld's settings: {cld})" in message
    )
