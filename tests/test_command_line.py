"""Habits of the command line work (issue 38): `--config` lists, "did you mean" for settings,
a version with its commit, the methods in `micd train --help`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, TINY_CONFIG, snakemake

import micd as micd_package
from micd.config.check import ConfigError, check_config
from micd.config.strings import typed_config
from micd.methods import METHODS
from micd.names import nearest

MICD = Path(sys.executable).parent / "micd"
SCHEMA = ROOT / "config" / "schema.yaml"


def micd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MICD), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_command_line_text_is_typed_as_the_schema_and_the_settings_classes_say():
    schema = yaml.safe_load(SCHEMA.read_text())
    given = {  # what snakemake --config makes of seeds=[0,1] and the rest: text below the top level
        "seeds": ["0", "1"],
        "methods": ["micd", "supervised"],
        "train": {"max_epochs": "2", "lr": "0.01", "nesterov": "false", "early_stop_patience": "null"},
        "method_settings": {"micd": {"mask_block": "8", "mask_ratio": "0.5", "cfc": "true"}},
        "method_train": {"fully": {"batch_labelled": "4"}},
        "datasets": {"s": {"source": "synthetic", "family": "synthetic", "train": {"max_epochs": "3"}}},
        "qualitative_case": "0001",  # the schema says string (or null): a case id stays text
    }
    typed = typed_config(given, schema)
    assert typed["seeds"] == [0, 1] and typed["methods"] == ["micd", "supervised"]
    assert typed["train"] == {"max_epochs": 2, "lr": 0.01, "nesterov": False, "early_stop_patience": None}
    assert typed["method_settings"] == {"micd": {"mask_block": 8, "mask_ratio": 0.5, "cfc": True}}
    assert typed["method_train"] == {"fully": {"batch_labelled": 4}}
    assert typed["datasets"]["s"]["train"] == {"max_epochs": 3}
    assert typed["qualitative_case"] == "0001"
    # text that spells no number stays text, for the check to name
    with_word = typed_config({"seeds": ["0", "x"]}, schema)
    assert with_word == {"seeds": [0, "x"]}
    try:
        check_config({"datasets": {"s": {"source": "synthetic", "family": "synthetic"}}, **with_word}, SCHEMA)
    except ConfigError as error:
        assert "seeds.1: 'x' is not of type 'integer'" in str(error)
    else:
        raise AssertionError("a seed 'x' passed the check")


@pytest.mark.workflow
def test_a_dry_run_plans_seeds_given_on_the_command_line(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    dry = snakemake(tmp_path, "-n", "--config", "seeds=[0,1]")
    out = dry.stdout + dry.stderr
    assert "is not of type" not in out
    # two seeds of three methods, the upper bound (fully) trained once for both ratios
    assert re.search(r"^train\s+10$", out, re.MULTILINE), out[-3000:]
    assert "wildcards: dataset=synthetic, ratio=5, method=micd, seed=1" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_a_method_setting_typo_gets_the_nearest_setting_in_the_check_and_in_micd_train(tmp_path):
    assert nearest("blok", [f for f in METHODS["micd"].Settings.__dataclass_fields__]) == "mask_block"
    config = {
        "datasets": {"s": {"source": "synthetic", "family": "synthetic"}},
        "method_settings": {"micd": {"blok": 8}},
    }
    try:
        check_config(config, SCHEMA)
    except ConfigError as error:
        assert "method_settings.micd.blok: micd has no setting 'blok'; did you mean 'mask_block'?" in str(error)
    else:
        raise AssertionError("the setting 'blok' passed the check")
    paths = [f"--{name}={tmp_path / 'absent'}" for name in ("data-dir", "train", "labelled", "unlabelled", "eval")]
    common = [*paths, f"--out-dir={tmp_path / 'run'}", "--family=synthetic", "--dataset=s", "--ratio=5", "--seed=0"]
    result = micd("train", *common, "--method=micd", '--method-settings={"blok": 8}')
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "micd train: error: micd has no setting 'blok'; did you mean 'mask_block'?" in result.stderr
    result = micd("train", *common, "--method=mcid")
    assert "micd train: error: unknown method 'mcid'; did you mean 'micd'?" in result.stderr
    assert not (tmp_path / "run").exists()


def test_micd_train_help_lists_every_registered_method():
    result = micd("train", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "registered method (docs/methods.md): " + ", ".join(sorted(METHODS)) in text


def test_micd_version_names_the_commit_of_the_checkout_it_runs_from(tmp_path):
    described = subprocess.run(["git", "describe", "--always", "--tags"], cwd=ROOT, capture_output=True, text=True)
    result = micd("--version", cwd=tmp_path)  # from anywhere: the commit is the package's checkout's
    assert result.returncode == 0, result.stderr
    if described.returncode != 0:  # a copy without .git: the fallback
        assert result.stdout.strip().endswith("(no commit: not run from a git checkout)")
        return
    match = re.fullmatch(r"micd (\S+) \(commit (\S+?)(-dirty)?\)", result.stdout.strip())
    assert match, result.stdout
    assert match[1] == micd_package.__version__ and match[2] == described.stdout.strip()


def test_micd_version_without_a_checkout_says_so(tmp_path):
    """An installed copy (here the package's files copied out of the checkout) names no commit."""
    import shutil

    import micd as package

    copy = tmp_path / "site" / "micd"
    shutil.copytree(Path(package.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import sys; sys.argv = ['micd', '--version']; from micd.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(copy.parent)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"micd {package.__version__} (no commit: not run from a git checkout)"
