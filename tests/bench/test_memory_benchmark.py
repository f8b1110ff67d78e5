"""The memory benchmark (bench/memory_benchmark.py) at its tiny size: real training steps, each
in its own process, and the extrapolation from the measured patches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from in_process import random_cases
from memory_benchmark import LiveTensorBytes, extrapolate, step_memory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
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
        assert r["memory_kind"] == "live_tensor_peak" and r["finite_loss"] and r["rss_step_mib"] > 0
        assert 1 <= r["attempts"] <= 12
        assert r["step_mib"] >= r["weights_mib"] + r["optimiser_state_mib"] > 0
        assert r["amp_dtype"] == ("bfloat16" if r["precision"] == "16bit" else None)
        assert r["machine"]["cpu"] and r["machine"]["threads"] == 1 and "cpu_bf16" in r["machine"]
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
    ids = random_cases(tmp_path / "data", (16, 32, 32), n=8)
    job = {
        "method": "fully",
        "precision": "fp32",
        "patch": [16, 32, 32],
        "n_filters": 2,
        "batch": {"batch_labelled": 4},
    }
    record = step_memory(**job, data_dir=tmp_path / "data", ids=ids, scratch=tmp_path / "runs", device="cpu")
    assert record["batch"] == "4+0" and record["patch_size"] == [16, 32, 32] and record["finite_loss"]


def test_a_cpu_without_bf16_instructions_gives_no_16bit_number(tmp_path):
    """Its bf16 convolutions take a fallback path larger than fp32: the README's table and the
    out-of-memory message leave such a record out, and keep one from a CPU with bf16."""
    from memory_benchmark import resource_table

    from micd.training.memory import recorded_needs

    def estimate(precision, mib, machine):
        return {
            "benchmark": "memory", "kind": "estimate", "size": "protocol", "date": "2026-12-04T00:00:00",
            "method": "supervised", "precision": precision, "n_filters": 32, "patch_size": [64, 128, 128],
            "batch": "2+0", "step_mib": mib, "intercept_mib": 0, "mib_per_voxel": mib / (64 * 128 * 128),
            "measured": ["16x64x128", "16x128x128"], "machine": machine,
        }  # fmt: skip

    avx2 = {"cpu": "AMD EPYC", "cpu_capability": "AVX2"}
    records = tmp_path / "memory.jsonl"
    records.write_text(json.dumps(estimate("fp32", 4096, avx2)) + "\n" + json.dumps(estimate("16bit", 6144, avx2)))
    assert "| 4.0 GiB | not measured |" in resource_table(records)
    assert set(recorded_needs("supervised", 32, [64, 128, 128], "2+0", (records,))) == {"fp32"}
    bf16 = {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "cpu_bf16": True}
    with open(records, "a") as f:
        f.write("\n" + json.dumps(estimate("16bit", 2048, bf16)))
    assert "| 4.0 GiB | 2.0 GiB |" in resource_table(records)
    assert recorded_needs("supervised", 32, [64, 128, 128], "2+0", (records,))["16bit"][0] == 2.0


def test_live_tensor_bytes_counts_each_storage_once_while_it_lives():
    mib = 2**20
    held = torch.zeros(mib // 4)  # 1 MiB of float32, alive before the count
    count = LiveTensorBytes("cpu")
    count.add(held)
    with count:
        a = torch.ones(2 * mib // 4)
        view = a[: mib // 4]  # shares a's storage
        assert count.current == 3 * mib
        del a, held  # the view keeps a's storage; held's goes
        assert count.current == 2 * mib
        del view
        b = torch.ones(mib // 4, dtype=torch.bfloat16)
        assert count.current == mib // 2
        x = torch.ones(mib // 4, requires_grad=True)
        (x * 2).sum().backward()  # backward's tensors are counted too: x and its gradient live
        assert count.current == mib // 2 + 2 * mib
    assert count.peak == 3 * mib and b.numel()


def test_the_readme_and_cluster_tables_are_the_recorded_ones():
    """The README's and docs/cluster.md's resource tables are what --table prints from the records."""
    from memory_benchmark import resource_table

    table = resource_table(ROOT / "bench" / "results" / "memory_benchmark.jsonl")
    for doc in ("README.md", "docs/cluster.md"):
        assert table in (ROOT / doc).read_text(), (
            f"{doc}: its table is not the records' (bench/memory_benchmark.py --table)"
        )
