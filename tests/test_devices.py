"""Device slots (micd.devices) with real processes on simulated GPU ids: a lock file per device
that the kernel releases when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from micd.devices import claim_device, parse_devices

MICD = Path(sys.executable).parent / "micd"  # the console script the package installs

HOLDER = """
import sys
from pathlib import Path
from micd.devices import claim_device, DeviceBusyError
try:
    claim_device({devices!r}, Path({lock_dir!r}), wait_minutes={wait})
except DeviceBusyError as exc:
    sys.exit(f"busy: {{exc}}")
import os
print("got", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
sys.stdin.read()  # hold the slot until the test closes stdin
"""


def start_holder(lock_dir, devices=("0", "1"), wait=0.0) -> subprocess.Popen:
    code = HOLDER.format(devices=list(devices), lock_dir=str(lock_dir), wait=wait)
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def device_of(holder: subprocess.Popen) -> str:
    """The device a holder reports on its 'got' line (its slot line comes first)."""
    for line in holder.stdout:
        if line.startswith("got "):
            return line.split()[1]
    raise AssertionError(f"holder ended without a device: {holder.stderr.read()}")


def release(*holders: subprocess.Popen) -> None:
    for holder in holders:
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait(timeout=60)


def test_concurrent_jobs_get_different_devices_and_a_third_fails_naming_the_holders(tmp_path):
    first, second = start_holder(tmp_path), start_holder(tmp_path)
    try:
        devices = {device_of(first), device_of(second)}
        assert devices == {"0", "1"}
        third = start_holder(tmp_path, wait=0)
        _, err = third.communicate(timeout=60)
        assert third.returncode != 0
        assert "every allowed GPU (0,1) stayed taken" in err
        assert f"pid {first.pid}" in err and f"pid {second.pid}" in err
    finally:
        release(first, second)


@pytest.mark.slow
def test_a_waiting_job_takes_the_slot_its_holder_gives_up(tmp_path):
    first = start_holder(tmp_path, devices=["3"])
    assert device_of(first) == "3"
    waiting = start_holder(tmp_path, devices=["3"], wait=2)
    try:
        assert waiting.stdout.readline().startswith("device slot: every allowed GPU (3) is taken; waiting")
        release(first)
        assert device_of(waiting) == "3"
    finally:
        release(first, waiting)


def test_a_killed_holders_slot_is_free_again(tmp_path):
    first = start_holder(tmp_path, devices=["0"])
    assert device_of(first) == "0"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    again = start_holder(tmp_path, devices=["0"], wait=0)
    try:
        assert device_of(again) == "0"
    finally:
        release(again)


def test_device_lists_and_what_takes_no_slot(tmp_path, monkeypatch):
    assert parse_devices("auto") is None and parse_devices("none") == [] and parse_devices("0, 2") == ["0", "2"]
    with pytest.raises(ValueError, match="'auto', 'none' or GPU ids"):
        parse_devices("gpu0")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert claim_device(["0"], tmp_path) is None  # SLURM assigned the job's GPUs
    monkeypatch.delenv("SLURM_JOB_ID")
    assert claim_device([], tmp_path) is None and not list(tmp_path.iterdir())


def test_auto_chooses_among_an_inherited_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    holder = start_holder(tmp_path, devices=["4"])
    try:
        assert device_of(holder) == "4"
        slot = claim_device(parse_devices("auto"), tmp_path, wait_minutes=0)
        assert slot.device == "7" and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
        os.close(slot.fd)  # this test process must not keep the slot
    finally:
        release(holder)


@pytest.mark.slow
def test_micd_train_and_infer_take_a_slot_before_anything_else(tmp_path):
    """The wiring: the slot line is the commands' first output (the missing data fails later)."""
    lock_dir = tmp_path / "locks"
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    missing = str(tmp_path / "missing")
    commands = {
        "train": ["--data-dir", missing, "--train", missing, "--labelled", missing, "--unlabelled", missing]
        + ["--eval", missing, "--out-dir", missing, "--method", "supervised", "--family", "synthetic"]
        + ["--dataset", "x", "--ratio", "5", "--seed", "0"],
        "infer": ["--model", missing, "--data-dir", missing, "--cases", missing, "--out", missing],
    }
    for command, options in commands.items():
        slot = ["--device-slots", "5,6", "--device-lock-dir", str(lock_dir), "--device-wait", "0"]
        done = subprocess.run(
            [str(MICD), command, *options, *slot], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode != 0
        assert done.stdout.splitlines()[0].startswith("device slot: GPU 5 of 5,6"), done.stdout + done.stderr
        assert "CUDA_VISIBLE_DEVICES=5" in done.stdout
    assert (lock_dir / "gpu5.lock").read_text().startswith("pid ")


def test_the_slot_options_default_to_what_the_workflow_puts_in_the_environment(tmp_path):
    """The workflow hands `resources.device_slots` to its jobs in the environment, so the rules'
    commands (and with them Snakemake's rerun triggers) do not change with it."""
    from micd.devices import SLOT_ENVIRONMENT

    lock_dir = tmp_path / "locks"
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    slots = {"devices": "3", "wait_minutes": "0", "lock_dir": str(lock_dir)}
    env |= {SLOT_ENVIRONMENT[key]: value for key, value in slots.items()}
    missing = str(tmp_path / "missing")
    options = ["--model", missing, "--data-dir", missing, "--cases", missing, "--out", missing]
    done = subprocess.run([str(MICD), "infer", *options], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert done.stdout.splitlines()[0].startswith("device slot: GPU 3 of 3"), done.stdout + done.stderr
    assert (lock_dir / "gpu3.lock").is_file()
