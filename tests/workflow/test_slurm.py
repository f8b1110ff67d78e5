"""The workflow on SLURM through profiles/slurm (snakemake-executor-plugin-slurm).

The `slurm` tests start a real one-node SLURM on this machine: Debian's slurm-wlm and munge
(installed with apt when missing; only where MICD_TESTS_CHANGE_MACHINE=1 lets the tests change
the machine, as CI does), munged on a private key and socket, slurmctld and slurmd as
root on unusual ports, no cgroups (proctrack/linuxproc, task/none) and no accounting database.
Without slurmdbd there is no sacct, so the plugin reads job states with squeue, its documented
alternative (MinJobAge keeps finished jobs listed), and jobcomp/filetxt records every job that
SLURM ran. The slurm.conf is linked at /etc/slurm/slurm.conf rather than named by SLURM_CONF:
inside a job, the plugin clears every SLURM_* variable, SLURM_CONF too, before it calls srun.

The dry-run tests need no SLURM: they check the resources each planned job would ask for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    MACHINE_CHANGES,
    ROOT,
    TINY_CONFIG,
    apt_install,
    machine_changes_allowed,
    snakemake,
    snakemake_command,
    snakemake_env,
)

# every test here plans or runs the real workflow (tests/conftest.py: the slow tier)
pytestmark = pytest.mark.workflow

SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
WRITTEN_BY_THIS_TEST = "# written by the micd test suite (tests/workflow/test_slurm.py) for its own one-node SLURM"
CONTROLLER_PORT, NODE_DAEMON_PORT = 16817, 16818
PARTITION = "micdtest"

# No GPUs on the test machine, and jobs small enough for it.
CPU_ONLY_RESOURCES = {stage: {"gpu": 0, "mem_mb": 2000, "runtime": 30} for stage in ("train", "infer")}
SLURM_CONFIG = {**TINY_CONFIG, "resources": CPU_ONLY_RESOURCES}

# The profile as a user runs it, plus what this test cluster needs: squeue for job states (no
# accounting database), short status intervals, and the SLURM logs of successful jobs kept.
ON_TEST_CLUSTER = (
    "--profile",
    str(ROOT / "profiles" / "slurm"),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--slurm-keep-successful-logs",
)

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) ")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\w+)\)")
PLANNED_RESOURCES = re.compile(r"^rule (\w+):\n(?:    (?!resources:).*\n)*    resources: (.*)$", re.MULTILINE)


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]

    def job_records(self) -> dict[str, dict[str, str]]:
        """Every job SLURM ran, by job id, as the fields of its job-completion record."""
        lines = (self.directory / "jobcomp.log").read_text().splitlines()
        records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines if line.strip()]
        return {record["JobId"]: record for record in records}


@dataclass
class SlurmRun:
    workdir: Path
    output: str


def install_slurm() -> None:
    if not machine_changes_allowed():
        pytest.skip(
            "the SLURM test installs slurm-wlm and munge, writes /etc/slurm/slurm.conf and starts SLURM's daemons "
            f"as root: {MACHINE_CHANGES}=1 lets it"
        )
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests install slurm-wlm and munge and start their daemons: they must run as root")
    if all(shutil.which(tool) for tool in SLURM_TOOLS):
        return
    failure = apt_install("slurm-wlm", "munge")
    if failure:
        pytest.fail(failure)


def claim_slurm_conf() -> None:
    """Fail rather than replace a SLURM configuration this test did not write."""
    if SLURM_CONF.is_symlink() and not SLURM_CONF.exists():  # left by an interrupted run
        SLURM_CONF.unlink()
    if SLURM_CONF.exists():
        if WRITTEN_BY_THIS_TEST not in SLURM_CONF.read_text():
            pytest.fail(f"{SLURM_CONF} exists: this machine has a SLURM of its own, which the test would replace")
        SLURM_CONF.unlink()
    for port in (CONTROLLER_PORT, NODE_DAEMON_PORT):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} is taken: is a SLURM of an earlier test run still up?")


def slurm_conf(directory: Path, munge_socket: Path) -> str:
    # This machine's node line as slurmd detects it, with memory to spare for the system.
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    memory = int(re.search(r"RealMemory=(\d+)", node).group(1))
    node = re.sub(r"RealMemory=\d+", f"RealMemory={int(memory * 0.9)}", node)
    name = re.search(r"NodeName=(\S+)", node).group(1)
    return f"""{WRITTEN_BY_THIS_TEST}
ClusterName=micdtest
SlurmctldHost={name}(127.0.0.1)
SlurmctldPort={CONTROLLER_PORT}
SlurmdPort={NODE_DAEMON_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={directory}/jobcomp.log
MinJobAge=300
KillWait=30
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def squeue(*fields: str) -> list[list[str]]:
    listing = subprocess.run(["squeue", "--noheader", "--format", "|".join(fields)], capture_output=True, text=True)
    return [line.split("|") for line in listing.stdout.splitlines()]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[Cluster]:
    install_slurm()
    claim_slurm_conf()
    directory = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (directory / sub).mkdir()
    munge_key, munge_socket = directory / "munge.key", directory / "munge.socket"
    munge_key.write_bytes(os.urandom(1024))
    munge_key.chmod(0o600)
    daemons: list[subprocess.Popen] = []

    def start(*command: str) -> None:
        output = open(directory / f"{Path(command[0]).name}.out", "w")
        daemons.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))

    try:
        start(
            "munged",
            "--foreground",
            "--force",  # as root, on files under /tmp
            f"--socket={munge_socket}",
            f"--key-file={munge_key}",
            f"--pid-file={directory / 'munged.pid'}",
            f"--seed-file={directory / 'munged.seed'}",
            f"--log-file={directory / 'munged.log'}",
        )
        wait_for(munge_socket.exists, 30, "munged's socket")
        (directory / "slurm.conf").write_text(slurm_conf(directory, munge_socket))
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.symlink_to(directory / "slurm.conf")
        start("slurmctld", "-D")
        start("slurmd", "-D")
        states = ["sinfo", "--noheader", "--format=%T"]
        wait_for(
            lambda: subprocess.run(states, capture_output=True, text=True).stdout.strip() == "idle",
            60,
            f"an idle SLURM node (logs in {directory})",
        )
        yield Cluster(directory, snakemake_env(SBATCH_ACCOUNT="", SBATCH_PARTITION=PARTITION))
    finally:
        left = [fields[0] for fields in squeue("%i")] if daemons else []
        if left:  # a test failed half-way: its jobs must not outlive the cluster
            subprocess.run(["scancel", *left])
            try:
                wait_for(lambda: not squeue("%i"), 60, f"SLURM jobs {left} to end")
            except AssertionError as error:
                print(error)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if SLURM_CONF.is_symlink():
            SLURM_CONF.unlink()


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: Cluster, tmp_path_factory) -> SlurmRun:
    """The tiny configuration run to the end on the test cluster, through profiles/slurm."""
    workdir = tmp_path_factory.mktemp("slurm_workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(SLURM_CONFIG))
    result = snakemake(workdir, *ON_TEST_CLUSTER, env=slurm_cluster.env)
    return SlurmRun(workdir, result.stdout + result.stderr)


def local_rules() -> set[str]:
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", (ROOT / "Snakefile").read_text(), re.MULTILINE)
    return set(re.findall(r"\w+", block.group(1)))


def planned_resources(output: str) -> list[tuple[str, dict[str, str]]]:
    """Each planned job's rule and resources, as a dry run prints them."""
    return [
        (rule, dict(item.split("=", 1) for item in resources.split(", ")))
        for rule, resources in PLANNED_RESOURCES.findall(output)
    ]


@pytest.mark.slurm
def test_every_cluster_job_went_through_sbatch_and_the_results_equal_a_local_run(
    slurm_cluster: Cluster, slurm_run: SlurmRun, tiny_run: Path
):
    submitted = dict(SUBMITTED.findall(slurm_run.output))  # Snakemake job id -> SLURM job id
    finished = dict(FINISHED.findall(slurm_run.output))  # Snakemake job id -> rule
    on_cluster = Counter(finished[job] for job in submitted)
    expected = {"convert": 1, "preprocess": 1, "train": 5, "infer": 6, "metrics": 6}
    assert {rule: on_cluster[rule] for rule in expected} == expected, on_cluster
    assert {rule for job, rule in finished.items() if job not in submitted} <= local_rules() | {"all"}
    records = slurm_cluster.job_records()
    assert {records[slurm_id]["JobState"] for slurm_id in submitted.values()} == {"COMPLETED"}
    assert all(records[slurm_id]["Partition"] == PARTITION for slurm_id in submitted.values())

    local_metrics = sorted(tiny_run.glob("results/synthetic/runs/*/*/seed*/metrics.csv"))
    assert len(local_metrics) == 6
    for metrics in local_metrics:
        on_slurm = slurm_run.workdir / metrics.relative_to(tiny_run)
        assert on_slurm.read_bytes() == metrics.read_bytes(), f"{on_slurm} differs from the local run's"
    table = Path("results/tables/synthetic_results.csv")
    pd.testing.assert_frame_equal(pd.read_csv(slurm_run.workdir / table), pd.read_csv(tiny_run / table))


@pytest.mark.slurm
def test_a_preempted_training_job_is_resubmitted_and_resumes_from_its_checkpoint(
    slurm_cluster: Cluster, slurm_run: SlurmRun
):
    workdir = slurm_run.workdir
    long_training = {**TINY_CONFIG["train"], "max_epochs": 3, "iterations_per_epoch": 50, "checkpoint_every": 5}
    (workdir / "preemption.yaml").write_text(yaml.safe_dump({**SLURM_CONFIG, "seeds": [1], "train": long_training}))
    target = "results/synthetic/runs/5p/supervised/seed1/model.pt"
    run_dir = workdir / Path(target).parent
    command = snakemake_command(workdir, *ON_TEST_CLUSTER, target, configfiles=["preemption.yaml"])
    with open(workdir / "preemption.out", "w") as output:
        run = subprocess.Popen(command, cwd=workdir, env=slurm_cluster.env, stdout=output, stderr=subprocess.STDOUT)
        try:

            def training_job_past_its_first_checkpoint() -> str | None:
                assert run.poll() is None, (workdir / "preemption.out").read_text()[-6000:]
                jobs = {comment: job_id for job_id, comment in squeue("%i", "%k")}
                if (run_dir / "state" / "checkpoint.pt").is_file():
                    return jobs.get("rule_train_wildcards_synthetic_5_supervised_1")
                return None

            training_job = wait_for(training_job_past_its_first_checkpoint, 300, "the training job's first checkpoint")
            # what SLURM does at a preemption that cancels, or at the time limit: SIGTERM to
            # every process of the job, SIGKILL after KillWait
            subprocess.run(["scancel", training_job], check=True)
            run.wait(timeout=600)
        finally:
            if run.poll() is None:
                run.terminate()
                run.wait()
    output = (workdir / "preemption.out").read_text()
    assert run.returncode == 0, output[-6000:]

    assert slurm_cluster.job_records()[training_job]["JobState"] == "CANCELLED"
    # micd itself caught the SIGTERM, wrote its checkpoint and exited with 143 (not killed)
    cancelled_log = workdir / f".snakemake/slurm_logs/rule_train/synthetic_5_supervised_1/{training_job}.log"
    assert "returned non-zero exit status 143" in cancelled_log.read_text()
    resubmission = [slurm_id for _, slurm_id in SUBMITTED.findall(output) if slurm_id != training_job]
    assert len(resubmission) == 1 and slurm_cluster.job_records()[resubmission[0]]["JobState"] == "COMPLETED"
    train_log = (workdir / "results/logs/synthetic/train_5p_supervised_seed1.log").read_text()
    resumed = re.search(r"resuming from \S+ at iteration (\d+)", train_log)
    assert resumed and int(resumed.group(1)) > 0, train_log
    iterations = [json.loads(line)["iteration"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 4 * 50 + 1))


def dry_run_on_slurm(workdir: Path, *configfiles: Path) -> list[tuple[str, dict[str, str]]]:
    # PATH without SLURM's commands: planning needs none of them (the plugin only asks `which`).
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "which").symlink_to(shutil.which("which"))
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}",
        SBATCH_ACCOUNT="our_account",
        SBATCH_PARTITION="gpu_partition",
    )
    profile = str(ROOT / "profiles" / "slurm")
    result = snakemake(workdir, "-n", "--profile", profile, env=env, configfiles=configfiles, timeout=300)
    return planned_resources(result.stdout + result.stderr)


def assert_gpu_requests(jobs: list[tuple[str, dict[str, str]]]) -> None:
    for rule, resources in jobs:
        assert resources["slurm_account"] == "our_account" and resources["slurm_partition"] == "gpu_partition"
        if rule == "train":
            assert resources["gpu"] == "1" and resources["cpus_per_gpu"] == "8", resources
            assert resources["mem_mb"] == "32000" and resources["runtime"] == "1440", resources
            assert resources["slurm_extra"] == "--signal=TERM@300", resources
        elif rule == "infer":
            assert resources["gpu"] == "1" and resources["cpus_per_gpu"] == "4", resources
        else:
            assert "gpu" not in resources, (rule, resources)


def test_dry_run_on_slurm_asks_a_gpu_for_every_training_job(tmp_path):
    jobs = dry_run_on_slurm(tmp_path, ROOT / "config" / "config.yaml")
    assert Counter(rule for rule, _ in jobs)["train"] == 4
    assert_gpu_requests(jobs)


def test_paper_dry_run_shows_gpu(tmp_path):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    jobs = dry_run_on_slurm(tmp_path, ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml")
    # the upper bound ("fully") is trained once per data set and seed, whatever the ratio
    runs = len(paper["run_datasets"]) * len(paper["seeds"]) * (len(paper["ratios"]) * (len(paper["methods"]) - 1) + 1)
    assert Counter(rule for rule, _ in jobs)["train"] == runs
    assert_gpu_requests(jobs)
