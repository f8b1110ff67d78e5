"""Plans say what will happen (issue 38): a local plan shows no cluster's resources, and the
paper's plan says which data sets cannot be fetched yet, and a run stops before its first job."""

from __future__ import annotations

import re

import pytest
import yaml
from workflow_helpers import TINY_CONFIG, copy_workflow, snakemake, snakemake_env

from micd.prerequisites import missing_prerequisites, plan_message

# every test here plans or runs the real workflow (tests/conftest.py: the slow tier)
pytestmark = pytest.mark.workflow

PAPER = ("config/config.yaml", "config/paper.yaml")
AMOS = {"source": "zenodo", "family": "amos", "licence": "CC BY 4.0", "licence_accepted": False}
SYNAPSE = {"source": "synapse", "family": "synapse", "synapse": {"placed": "data/RawData.zip", "token_env": "TOKEN"}}


def test_each_data_set_says_what_its_download_still_needs(tmp_path):
    config = {"datasets": {"amos": AMOS, "synapse": SYNAPSE, "synthetic": {"source": "synthetic"}}}
    names = ["amos", "synapse", "synthetic"]
    missing = missing_prerequisites(config, names, tmp_path, {})
    assert missing == {
        "amos": "amos: its licence (CC BY 4.0) is not accepted yet: read it, then set "
        "datasets.amos.licence_accepted: true in your config file (docs/datasets.md)",
        "synapse": "synapse: no RawData.zip at data/RawData.zip and $TOKEN is not set: place the archive there "
        "or export a synapse.org personal access token (docs/datasets.md)",
    }
    assert missing_prerequisites(config, names, tmp_path, {"TOKEN": "secret"}).keys() == {"amos"}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "RawData.zip").write_bytes(b"placed")
    accepted = {"datasets": {**config["datasets"], "amos": {**AMOS, "licence_accepted": True}}}
    assert missing_prerequisites(accepted, names, tmp_path, {}) == {}
    # fetched already: nothing more is needed, whatever the config says now
    (tmp_path / "results" / "amos" / "raw").mkdir(parents=True)
    assert missing_prerequisites(config, ["amos"], tmp_path, {}) == {}
    assert plan_message({"amos": "amos: X"}) == (
        "Not ready: 1 data set of this run lacks what its download needs:\n  amos: X\n"
        "A run without -n stops before its first job while its download is planned; "
        "--config 'run_datasets=[...]' leaves it out."
    )


def without_tokens() -> dict[str, str]:
    return {k: v for k, v in snakemake_env().items() if k != "SYNAPSE_AUTH_TOKEN"}


def test_the_paper_plan_ends_with_what_its_data_sets_lack(tmp_path):
    copy_workflow(tmp_path)
    dry = snakemake(tmp_path, "-n", configfiles=PAPER, env=without_tokens(), timeout=600)
    out = dry.stdout + dry.stderr
    assert re.search(r"^train\s+\d+$", out, re.MULTILINE), "the plan is still made"
    ending = out[out.index("This was a dry-run") :]
    assert "Not ready: 2 data sets of this run lack what their download needs:" in ending
    assert "amos: its licence (CC BY 4.0 (AMOS 2022, Zenodo record 7262581)) is not accepted yet" in ending
    assert "synapse: no RawData.zip at data/RawData.zip and $SYNAPSE_AUTH_TOKEN is not set" in ending
    assert not (tmp_path / "results").exists()


def test_a_paper_run_stops_before_its_first_job_when_a_download_cannot_start(tmp_path):
    copy_workflow(tmp_path)
    run = snakemake(
        tmp_path,
        "--cores",
        "1",
        "--config",
        "run_datasets=[synapse]",
        configfiles=PAPER,
        env=without_tokens(),
        check=False,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Stopped before the first job: 1 data set of this run lacks what its download needs:" in out
    assert "synapse: no RawData.zip at data/RawData.zip and $SYNAPSE_AUTH_TOKEN is not set" in out
    assert "amos" not in out.split("Stopped before the first job")[1]  # not planned: not named
    assert not (tmp_path / "results").exists(), "no job ran"
    # with the archive placed the same command plans and starts: the data set is ready
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "RawData.zip").write_bytes(b"placed")
    dry = snakemake(tmp_path, "-n", "--config", "run_datasets=[synapse]", configfiles=PAPER, env=without_tokens())
    assert "Not ready" not in dry.stdout + dry.stderr


def planned_resources(out: str) -> dict[str, set[str]]:
    """Rule name -> the resources lines of its planned jobs."""
    found: dict[str, set[str]] = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.MULTILINE):
        found.setdefault(rule, set()).add(resources)
    return found


def test_a_local_plan_shows_no_cluster_resources(tmp_path):
    """What a SLURM job would ask (tests/workflow/test_slurm.py plans it) is not shown for jobs run here."""
    copy_workflow(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    local = planned_resources(snakemake(tmp_path, "-n").stdout)
    assert local.keys() >= {"train", "infer", "metrics"}
    shown = {r for rows in local.values() for r in rows}
    assert not any(key in r for r in shown for key in ("mem_mb", "runtime", "gpu", "cpus_per_gpu", "slurm")), shown
    # a workstation that counts its GPUs (README, "On a workstation"): each training job takes one
    counted = planned_resources(snakemake(tmp_path, "-n", "--resources", "gpu=2").stdout)
    assert all(r.endswith(", gpu=1") and "mem_mb" not in r for r in counted["train"] | counted["infer"]), counted
    assert not any("gpu" in r for rule, rows in counted.items() if rule not in ("train", "infer") for r in rows)


def test_a_cluster_plan_shows_what_jobs_ask_of_slurm_and_names_the_jobs_run_here(tmp_path):
    copy_workflow(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    env = dict(snakemake_env(), SBATCH_ACCOUNT="acct", SBATCH_PARTITION="gpu")
    dry = snakemake(tmp_path, "-n", "--profile", str(tmp_path / "profiles" / "slurm"), env=env)
    planned = planned_resources(dry.stdout)
    assert all("mem_mb=32000" in r and "runtime=1440" in r and "gpu=1" in r for r in planned["train"]), planned
    note = "Run where Snakemake runs, not submitted (Snakefile `localrules`; this plan prints them as `rule`): "
    assert note in dry.stderr
    named = dry.stderr.split(note)[1].splitlines()[0].split(", ")
    assert {"synthesise", "split", "table", "report_config"} <= set(named) and "train" not in named


def test_a_cluster_executor_named_without_the_profile_plans_the_cluster_resources(tmp_path):
    """`--executor slurm` typed, not a profile's: the workflow reads it from Snakemake's command line."""
    copy_workflow(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    planned = planned_resources(snakemake(tmp_path, "-n", "--executor", "slurm", "--jobs", "5").stdout)
    assert all("mem_mb=32000" in r and "gpu=1" in r and "cpus_per_gpu=8" in r for r in planned["train"]), planned
