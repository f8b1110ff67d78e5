"""`snakemake --profile slurm`, typed just so from the repository root, plans the default target
once the account and partition are exported, and says clearly what is missing otherwise. The root
is a fresh copy of the workflow (copy_workflow), so the checkout's results/ do not matter and
nothing is written into it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import ROOT, copy_workflow

# every test here plans or runs the real workflow (tests/conftest.py: the slow tier)
pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("root"))


def dry_run(root: Path, **env: str | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SBATCH_")}
    environment.update({k: v for k, v in env.items() if v is not None})
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    command = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm"]
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=300)


def test_the_root_profile_is_the_slurm_profile(root):
    for folder in (ROOT, root):
        assert (folder / "slurm").resolve() == (folder / "profiles" / "slurm").resolve()
        assert (folder / "slurm" / "config.yaml").is_file()


def test_snakemake_profile_slurm_plans_the_default_target_from_the_root(root):
    result = dry_run(root, SBATCH_ACCOUNT="our_account", SBATCH_PARTITION="gpu")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Using profile slurm" in output
    assert "rule train:" in output and "slurm_account=our_account" in output and "slurm_partition=gpu" in output
    assert "$SBATCH" not in output


@pytest.mark.parametrize("unset", ["SBATCH_ACCOUNT", "SBATCH_PARTITION"])
def test_an_unexported_account_or_partition_stops_the_run_with_what_to_do(root, unset):
    exported = {"SBATCH_ACCOUNT": "our_account", "SBATCH_PARTITION": "gpu", unset: None}
    result = dry_run(root, **exported)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"and {unset} is not exported: export SBATCH_ACCOUNT=<account> SBATCH_PARTITION=<partition>" in output
    assert "rule train:" not in output


def test_an_empty_account_means_none_and_plans(root):
    result = dry_run(root, SBATCH_ACCOUNT="", SBATCH_PARTITION="")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
