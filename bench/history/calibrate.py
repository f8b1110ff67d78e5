"""Learning curves for sizing the synthetic benchmark (docs/benchmark.md, "Calibration").

Trains one method at one labelled ratio per candidate with ``micd train`` (the workflow's
own command), two candidates at a time with one thread each, on a data set the workflow has
already preprocessed and split, and appends one record per candidate to
``bench/results/calibration.jsonl``: its train settings, wall time, seconds per iteration and
eval curve (epoch, iteration, mean Dice). ``--figure`` draws the recorded curves.

    python bench/history/calibrate.py --base config/config.yaml config/benchmark.yaml \\
        --candidate fully-10p-lr0.3 fully 10 '{"lr": 0.3}' --candidate supervised-5p supervised 5 '{}'
    python bench/history/calibrate.py --figure bench/results/calibration.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from micd.provenance import machine_description
from micd.training.runs import Run, first_run_dataset, layered_config, resolve_run

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "bench" / "results" / "calibration.jsonl"


def run(name: str, spec: Run, ratio: int, extra: dict, dataset: str, out_root: Path) -> dict:
    """Train ``spec`` (a method or variant as the layered config resolves it) with the train
    settings ``extra`` on top."""
    settings = {**spec.train_settings, **extra}
    splits = ROOT / "results" / dataset / "splits"
    out = out_root / name
    command = [
        sys.executable, "-m", "micd.cli", "train", "--data-dir", str(ROOT / "results" / dataset / "preprocessed"),
        "--train", str(splits / "train.txt"), "--labelled", str(splits / f"labelled_{ratio}p.txt"),
        "--unlabelled", str(splits / f"unlabelled_{ratio}p.txt"), "--eval", str(splits / "eval.txt"),
        "--out-dir", str(out), "--method", spec.method, "--variant", spec.name,
        "--method-settings", json.dumps(spec.method_settings), "--train-settings", json.dumps(settings),
        "--family", "synthetic", "--dataset", dataset, "--ratio", str(ratio), "--seed", "0", "--threads", "1",
    ]  # fmt: skip
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.out", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.time() - started
    curve = [
        {"epoch": int(e), "iteration": int(i), "eval_dice": float(d)}
        for e, i, d in (line.split(",") for line in (out / "validation.csv").read_text().splitlines()[1:])
    ]
    iterations = curve[-1]["iteration"] if curve else 0
    return {
        "benchmark": "calibration",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(threads=1),  # micd train --threads 1
        "name": name,
        "dataset": dataset,
        "method": spec.name,
        "ratio": ratio,
        "method_settings": spec.method_settings,
        "train_settings": settings,
        "wall_s": round(wall),
        "s_per_iteration": round(wall / max(iterations, 1), 3),
        "curve": curve,
    }


def figure(path: Path, names: list[str] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    if names:
        records = [r for r in records if r["name"] in names]
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in records:
        ax.plot([c["iteration"] for c in r["curve"]], [c["eval_dice"] for c in r["curve"]], marker=".", label=r["name"])
    ax.set_xlabel("iteration")
    ax.set_ylabel("eval mean Dice (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title("Synthetic benchmark calibration: eval Dice against iterations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, nargs="+", default=[ROOT / "config" / "config.yaml"])
    p.add_argument("--candidate", nargs=4, action="append", metavar=("NAME", "METHOD", "RATIO", "SETTINGS"), default=[])
    p.add_argument("--out-root", type=Path, default=ROOT / "results" / "calibration")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--figure", type=Path)
    p.add_argument("--names", nargs="*")
    args = p.parse_args()
    if args.figure:
        figure(args.figure, args.names)
        return
    config = layered_config(args.base)
    dataset = first_run_dataset(config)
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [
            pool.submit(
                run, name, resolve_run(config, dataset, method), int(ratio), json.loads(extra), dataset, args.out_root
            )
            for name, method, ratio, extra in args.candidate
        ]
        for job in jobs:
            record = job.result()
            RECORDS.parent.mkdir(parents=True, exist_ok=True)
            with open(RECORDS, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                record["name"], record["wall_s"], "s", [round(c["eval_dice"], 1) for c in record["curve"]], flush=True
            )


if __name__ == "__main__":
    main()
