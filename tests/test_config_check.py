"""Configuration mistakes are caught at workflow load, each with a short line naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from micd.config_check import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def problems_of(changes: dict) -> str:
    config = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    with pytest.raises(ConfigError) as caught:
        check_config(config, SCHEMA)
    return str(caught.value)


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml", "benchmark.yaml"])
def test_the_shipped_configurations_pass(config):
    layered = copy.deepcopy(DEFAULT)
    layered.update(yaml.safe_load((ROOT / "config" / config).read_text()))
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


def test_every_problem_is_reported_at_once():
    message = problems_of({"ratio": [5], "train.lr": 0})
    assert message.startswith("2 problems in the configuration:")


def test_the_workflow_stops_at_load_with_the_short_message(tmp_path):
    (tmp_path / "typo.yaml").write_text("ratio: [5]\ntrain: {max_epoch: 3}\n")
    command = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile")]
    command += ["--directory", str(ROOT), "--configfile", str(tmp_path / "typo.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ratio: unknown key; did you mean 'ratios'?" in output
    assert "train.max_epoch: unknown key; did you mean 'max_epochs'?" in output
    assert "properties" not in output  # no schema dump
    assert len(output.splitlines()) < 15
