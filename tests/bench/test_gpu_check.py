"""The prepared GPU check (bench/gpu_check.py) at its tiny size on the CPU, so that it cannot rot
between the sessions that are lent a GPU: the same command, every registered method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from micd.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_every_method_through_workflow_and_step_timing(tmp_path):
    out = tmp_path / "gpu_check.jsonl"
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--size", "tiny", "--threads", "1"]
    command += ["--iterations", "1", "--warmup", "1", "--workflow-iterations", "2", "--out", str(out)]
    command += ["--memory-methods", "supervised", "micd"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    workflow = {r["method"]: r for r in records if r["stage"] == "workflow"}
    steps = [r for r in records if r["stage"] == "steps"]
    assert set(workflow) == set(METHODS)
    assert all(r["finite_losses"] and r["skipped_steps"] == 0 and r["iterations"] == 4 for r in workflow.values())
    assert all(0 <= r["test_mean_dice"] <= 100 for r in workflow.values())
    assert {r["method"] for r in steps} == set(METHODS)
    assert all(r["step_s_median"] > 0 and 0 <= r["data_wait_fraction"] <= 1 for r in steps)
    assert [r["channels_last"] for r in steps if r["method"] == "micd"] == [True, False]
    memory = [r for r in records if r["stage"] == "memory"]
    assert [(r["method"], r["precision"]) for r in memory] == [
        (m, p) for p in ("fp32", "16bit") for m in ("supervised", "micd")
    ]
    assert all(r["benchmark"] == "memory" and r["step_mib"] > 0 and r["patch_size"] == [64, 32, 32] for r in memory)
    assert records[-1]["stage"] == "done" and all(r["machine"]["torch"] for r in records)


@pytest.mark.slow
def test_the_gpu_benchmark_reads_the_layered_configs_and_scores_a_row(tmp_path):
    """bench/gpu_benchmark.py, the core rows on a lent GPU, as a smoke run on the CPU."""
    out = tmp_path / "gpu_benchmark.jsonl"
    command = [sys.executable, str(ROOT / "bench" / "gpu_benchmark.py"), "--epochs", "1", "--iterations", "1"]
    command += ["--methods", "supervised", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["method"] == "supervised" and record["ratio"] == 5 and record["n_filters"] == 16
    assert record["iterations"] == 2 and record["skipped_steps"] == 0
    assert 0 <= record["test_mean_dice"] <= 100 and record["machine"]["torch"]
