"""A training job says what it does (issue 38): a start line, progress at a steady rhythm (a bar
on a terminal, plain lines in a log), and each epoch's share of time spent waiting for data."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from micd.training.console import TrainingConsole, clock_text, start_line

MICD = Path(sys.executable).parent / "micd"


class SteppedClock:
    """A clock that the test moves on: seconds as the test says they passed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def row(iteration: int, loss: float | None, data_s: float, compute_s: float) -> dict:
    return {"iteration": iteration, "losses": {"loss": loss}, "data_s": data_s, "compute_s": compute_s}


def test_plain_progress_lines_every_five_percent_with_rate_and_time_left():
    clock, out = SteppedClock(), io.StringIO()
    console = TrainingConsole(max_epochs=9, per_epoch=20, stream=out, terminal=False, clock=clock)  # 200 iterations
    console.begin_epoch(0, 0)
    for i in range(1, 21):
        clock.now += 0.5
        console.after_iteration(row(i, 2.0 if i <= 10 else 1.0, 0.1, 0.4))
    console.end_epoch()
    console.epoch_line(0, "eval mean Dice 12.34")
    lines = out.getvalue().splitlines()
    assert lines == [
        "iteration 10/200 (5 %), epoch 0/9: loss 2.0000, 2.00 it/s, 0:00:05 spent, 0:01:35 left",
        "iteration 20/200 (10 %), epoch 0/9: loss 1.0000, 2.00 it/s, 0:00:10 spent, 0:01:30 left",
        "epoch 0/9: eval mean Dice 12.34; 20 iterations in 0:00:10, data wait 20 %",
    ]


def test_a_slow_run_gets_a_line_at_least_once_a_minute_and_says_when_the_loss_was_not_finite():
    clock, out = SteppedClock(), io.StringIO()
    console = TrainingConsole(max_epochs=99, per_epoch=100, stream=out, terminal=False, clock=clock)
    console.begin_epoch(0, 0)
    clock.now += 61
    console.after_iteration(row(1, None, 1.0, 60.0))
    assert (
        out.getvalue()
        == "iteration 1/10000 (0 %), epoch 0/99: loss not finite, 0.02 it/s, 0:01:01 spent, 169:25:39 left\n"
    )


def test_a_resumed_run_counts_its_rate_from_the_resume():
    clock, out = SteppedClock(), io.StringIO()
    console = TrainingConsole(max_epochs=1, per_epoch=10, done=15, stream=out, terminal=False, clock=clock)
    console.begin_epoch(1, 5)
    clock.now += 4
    console.after_iteration(row(16, 0.5, 0.0, 1.0))  # 1 iteration in 4 s, 4 left
    assert out.getvalue() == "iteration 16/20 (80 %), epoch 1/1: loss 0.5000, 0.25 it/s, 0:00:04 spent, 0:00:16 left\n"


def test_on_a_terminal_a_bar_replaces_the_plain_lines():
    clock, out = SteppedClock(), io.StringIO()
    console = TrainingConsole(max_epochs=1, per_epoch=4, stream=out, terminal=True, clock=clock)
    console.begin_epoch(0, 0)
    for i in range(1, 5):
        console.after_iteration(row(i, 1.5, 0.0, 0.1))
    console.end_epoch()
    text = out.getvalue()
    assert "epoch 0/1" in text and "4/4" in text and "loss=1.5" in text
    assert "iteration 1/" not in text


def test_the_start_line_names_method_run_device_and_iterations():
    info = {"method": "micd", "variant": "micd_r0.5", "dataset": "amos", "ratio": 5, "seed": 666}
    line = start_line(info, {"device": "cuda", "gpu": "NVIDIA H100"}, max_epochs=200, per_epoch=108, done=0)
    assert line == (
        "training micd (run micd_r0.5) on amos, 5 % labelled, seed 666; NVIDIA H100: "
        "epochs 0..200 of 108 iterations, 21708 in all"
    )
    cpu = start_line(
        {"method": "supervised", "variant": "supervised", "seed": 0}, {"device": "cpu", "threads": 2}, 8, 17, 40
    )
    assert (
        cpu == "training supervised seed 0; cpu, 2 threads: epochs 0..8 of 17 iterations, 153 in all, resumed after 40"
    )
    assert clock_text(3725.4) == "1:02:05"


def micd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([str(MICD), *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_a_real_training_through_micd_train_prints_start_progress_and_data_wait(tmp_path):
    """The stages a rule runs, at a tiny size, then `micd train` as the train rule calls it
    (its output to a file, as `> {log} 2>&1` does): the log reads as a person would want."""
    options = json.dumps({"inplane": [40, 48], "slices": [18, 24]})
    micd(
        "synthesise",
        "--out",
        "raw",
        "--n-train",
        "8",
        "--n-validation",
        "2",
        "--seed",
        "3",
        "--options",
        options,
        cwd=tmp_path,
    )
    micd("convert", "--archive", "raw", "--out", "converted", cwd=tmp_path)
    preprocess = ["--grid", "16", "32", "32", "--hu-window", "-75", "275", "--family", "synthetic"]
    micd("preprocess", "--manifest", "converted/manifest.csv", "--out", "pre", *preprocess, cwd=tmp_path)
    micd(
        "split",
        "--cases",
        "pre/cases.csv",
        "--out",
        "splits",
        "--ratios",
        "25",
        "--seed",
        "0",
        "--eval-fraction",
        "0.2",
        cwd=tmp_path,
    )
    settings = {
        "max_epochs": 3,
        "iterations_per_epoch": 4,
        "n_filters": 2,
        "patch_size": [16, 32, 32],
        "window_stride": [16, 16, 16],
        "validate_every": 2,
        "queue_length": 4,
    }
    lists = {name: f"splits/{file}" for name, file in (("train", "train.txt"), ("labelled", "labelled_25p.txt"))}
    lists |= {"unlabelled": "splits/unlabelled_25p.txt", "eval": "splits/eval.txt"}
    command = [str(MICD), "train", "--data-dir", "pre", *(f"--{k}={v}" for k, v in lists.items()), "--out-dir", "run"]
    command += ["--method", "micd", "--variant", "micd_small", "--method-settings", '{"mask_block": 8}']
    command += ["--train-settings", json.dumps(settings), "--family", "synthetic", "--dataset", "synthetic"]
    command += ["--ratio", "25", "--seed", "0"]
    with open(tmp_path / "train.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=600, check=True)
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0] == (
        "training micd (run micd_small) on synthetic, 25 % labelled, seed 0; cpu, 1 thread: "
        "epochs 0..3 of 4 iterations, 16 in all"
    )
    progress = [line for line in lines if line.startswith("iteration ")]
    assert [line.split(" (")[0] for line in progress] == [f"iteration {i}/16" for i in range(1, 17)]
    pattern = r"iteration \d+/16 \(\d+ %\), epoch [0-3]/3: loss \d+\.\d{4}, \d+\.\d\d it/s, 0:\d\d:\d\d spent, 0:\d\d:\d\d left"
    assert all(re.fullmatch(pattern, line) for line in progress), progress
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 0/3", "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    ending = r"4 iterations in 0:\d\d:\d\d, data wait (\d+) %"
    assert re.fullmatch(r"epoch 0/3: eval mean Dice \d+\.\d\d; " + ending, epochs[0]), epochs[0]
    assert re.fullmatch(r"epoch 1/3: " + ending, epochs[1]), epochs[1]
    # the share is the log's own: its rows' data-wait seconds over their data-wait and compute seconds
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["epoch"] == 1]
    share = 100 * sum(r["data_s"] for r in first) / sum(r["data_s"] + r["compute_s"] for r in first)
    assert int(re.fullmatch(r"epoch 1/3: " + ending, epochs[1])[1]) == round(share)
