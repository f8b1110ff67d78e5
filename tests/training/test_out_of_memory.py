"""A training job that runs out of GPU memory ends with an error naming what it must (issue 29),
through the real ``micd train`` path: the step raises the out-of-memory error PyTorch raises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import micd.training.memory
from micd.cli import main
from micd.methods.supervised import Supervised

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from in_process import random_cases  # noqa: E402


def train_args(tmp_path: Path) -> list[str]:
    ids = random_cases(tmp_path / "data", (16, 32, 32), n=4)
    lists = {"labelled": ids[:2], "unlabelled": ids[2:3], "eval": ids[3:]}
    for name, cases in lists.items():
        (tmp_path / f"{name}.txt").write_text("".join(f"{c}\n" for c in cases))
    settings = {"max_epochs": 1, "iterations_per_epoch": 3, "checkpoint_every": 1, "n_filters": 2}
    settings |= {"patch_size": [16, 32, 32], "validate_every": 1, "early_stop_patience": None, "device": "cpu"}
    args = ["train", "--data-dir", str(tmp_path / "data"), "--train", str(tmp_path / "labelled.txt")]
    args += [f"--{name}={tmp_path / f'{name}.txt'}" for name in lists]
    args += ["--out-dir", str(tmp_path / "run"), "--method", "supervised", "--family", "synthetic"]
    return args + ["--train-settings", json.dumps(settings), "--dataset", "x", "--ratio", "5", "--seed", "0"]


def test_out_of_memory_names_method_size_device_needs_and_levers_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    records = tmp_path / "memory_benchmark.jsonl"
    estimate = {"benchmark": "memory", "kind": "estimate", "method": "supervised", "precision": "fp32"}
    estimate |= {"n_filters": 2, "batch": "2+0", "intercept_mib": 100, "mib_per_voxel": 0.5, "date": "2026-12-03"}
    records.write_text(json.dumps(estimate | {"measured": {"16x16x32": 4196, "16x32x32": 8292}}) + "\n")
    monkeypatch.setenv("MICD_MEMORY_RECORDS", str(records))
    real_step = Supervised.training_step
    calls = []

    def step_running_out_on_the_third_call(self, batch, progress):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, batch, progress)

    monkeypatch.setattr(Supervised, "training_step", step_running_out_on_the_third_call)
    args = train_args(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    message = str(stopped.value.code)
    for expected in (
        "out of memory training supervised (VNet width 2, patch 16x32x32, batch 2+0, fp32) at iteration 3 on cpu",
        "GiB of RAM",
        "needs fp32: about 8.1 GiB (CPU estimate, extrapolated from 16x16x32, 16x32x32, 2026-12-03)",
        "train.amp: fp16",
        "train.patch_size",
        "resources.train.gpu_model",
        f"the checkpoint {tmp_path / 'run' / 'state' / 'checkpoint.pt'} is whole",
    ):
        assert expected in message, message
    run = tmp_path / "run"
    assert not (run / "model.pt").exists() and not (run / "train_log.jsonl").exists()
    assert torch.load(run / "state" / "checkpoint.pt", weights_only=True)["iteration"] == 2

    monkeypatch.setattr(Supervised, "training_step", real_step)
    capsys.readouterr()
    main(args)
    assert "resuming from" in capsys.readouterr().out
    iterations = [json.loads(line)["iteration"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, len(iterations) + 1)) and (run / "model.pt").is_file()


def test_without_a_record_the_message_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("MICD_MEMORY_RECORDS", str(tmp_path / "none.jsonl"))
    assert micd.training.memory.recorded_needs("micd", 32, [64, 128, 128], "2+2") == {}
