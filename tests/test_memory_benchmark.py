"""The memory benchmark (bench/memory_benchmark.py) at its tiny size: real training steps, each
in its own process, and the extrapolation from the measured patches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from memory_benchmark import extrapolate, step_memory  # noqa: E402
from step_benchmark import make_cases  # noqa: E402


def test_the_memory_benchmark_measures_each_method_in_its_own_process_and_extrapolates(tmp_path):
    out = tmp_path / "memory.jsonl"
    command = [sys.executable, str(ROOT / "bench" / "memory_benchmark.py"), "--sizes", "tiny", "--out", str(out)]
    command += ["--methods", "supervised", "micd", "--precisions", "fp32", "16bit", "--timeout", "600"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    measured = [r for r in records if r["kind"] == "measured"]
    estimates = {(r["method"], r["precision"]): r for r in records if r["kind"] == "estimate"}
    assert len(measured) == 8 and not [r for r in measured if "error" in r]
    assert set(estimates) == {(m, p) for m in ("supervised", "micd") for p in ("fp32", "16bit")}
    for r in measured:
        assert r["memory_kind"] == "process_peak_rss_minus_before_model" and r["finite_loss"]
        assert r["step_mib"] >= r["weights_mib"] + r["optimiser_state_mib"] > 0
        assert r["amp_dtype"] == ("bfloat16" if r["precision"] == "16bit" else None)
        assert r["machine"]["cpu"] and r["machine"]["cpu_threads"] == 1
    # MICD's step (two students and two teachers, four forward passes over 2 + 2 patches) needs
    # more than the lower bound's (one network, 2 labelled patches)
    by = {(r["method"], r["precision"], tuple(r["patch_size"])): r for r in measured}
    assert by["micd", "fp32", (32, 32, 32)]["step_mib"] > by["supervised", "fp32", (32, 32, 32)]["step_mib"]
    assert (
        by["micd", "fp32", (32, 32, 32)]["batch"] == "2+2" and by["supervised", "fp32", (16, 32, 32)]["batch"] == "2+0"
    )
    for (method, precision), estimate in estimates.items():
        points = [r for r in measured if r["method"] == method and r["precision"] == precision]
        assert estimate["patch_size"] == [64, 32, 32]
        assert estimate["step_mib"] == extrapolate(points, [64, 32, 32])["step_mib"]


def test_the_extrapolation_is_the_line_through_the_measured_patches():
    points = [{"patch_size": [16, 64, 128], "step_mib": 3000}, {"patch_size": [16, 128, 128], "step_mib": 5000}]
    estimate = extrapolate(points, [64, 128, 128])
    assert estimate["step_mib"] == 5000 + 6 * 2000 and estimate["intercept_mib"] == 1000
    assert estimate["measured"] == {"16x64x128": 3000, "16x128x128": 5000}


def test_one_step_in_this_process_as_the_gpu_check_runs_it(tmp_path):
    """bench/gpu_check.py's memory stage calls step_memory in its own process on a GPU."""
    ids = make_cases(tmp_path / "data", (16, 32, 32), n=8)
    job = {
        "method": "fully",
        "precision": "fp32",
        "patch": [16, 32, 32],
        "n_filters": 2,
        "batch": {"batch_labelled": 4},
    }
    record = step_memory(**job, data_dir=tmp_path / "data", ids=ids, scratch=tmp_path / "runs", device="cpu")
    assert record["batch"] == "4+0" and record["patch_size"] == [16, 32, 32] and record["finite_loss"]
