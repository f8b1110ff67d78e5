"""The synthetic benchmark's core rows on a lent GPU, without Snakemake (the GPU machine has
none): the stages of the workflow through micd's Python API, with the settings of
``config/config.yaml``, ``config/benchmark.yaml`` and ``config/benchmark_gpu.yaml`` layered as
the workflow layers them. Writes one record per row (test-set mean Dice and ASD, best eval
Dice, training seconds, skipped steps) to ``--out`` and ``$OUT`` when set.

    python bench/gpu_benchmark.py                        # on the GPU machine (bash bench/gpu_benchmark.sh)
    python bench/gpu_benchmark.py --epochs 1 --iterations 2 --methods supervised   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import torch
from in_process import score_test_cases, synthetic_set, train_run

from micd.data.splits import make_splits
from micd.devices import resolve_device
from micd.evaluation.measures import summarise
from micd.provenance import machine_description
from micd.settings import TrainSettings
from micd.training.runs import first_run_dataset, layered_config, resolve_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("config/config.yaml", "config/benchmark.yaml", "config/benchmark_gpu.yaml")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=None, help="methods or variants; default: the configuration's rows")
    p.add_argument("--epochs", type=int, default=None, help="override train.max_epochs (a smoke run)")
    p.add_argument("--iterations", type=int, default=None, help="override the iterations per epoch (a smoke run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_benchmark.jsonl")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = layered_config(ROOT / path for path in CONFIGS)
    name = first_run_dataset(config)
    dataset = config["datasets"][name]
    device = resolve_device(args.device)
    overrides = {"device": str(device)}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    if args.iterations is not None:
        overrides["iterations_per_epoch"] = args.iterations
    machine = machine_description(device)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    synthetic = dataset["synthetic"]
    split = config.get("split", {})
    with tempfile.TemporaryDirectory(prefix="micd-gpu-benchmark-") as tmp:
        root = Path(tmp)
        data = synthetic_set(
            root / "data",
            synthetic["n_train"],
            synthetic["n_validation"],
            seed=synthetic["seed"],
            grid=tuple(config["preprocess"]["grid"]),
            family=dataset["family"],
        )
        for ratio in config["ratios"]:
            splits = make_splits(data.train, data.test, [ratio], split.get("seed", 0), split.get("eval_fraction", 0.1))
            for method in args.methods or config["methods"]:
                spec = resolve_run(config, name, method)
                settings = TrainSettings.from_dict({**spec.train_settings, **overrides})
                run_dir = root / "runs" / f"{ratio}p" / method
                run = train_run(spec.method, spec.method_settings, settings, data, splits, ratio, run_dir)
                keys = {"dataset": name, "ratio": ratio, "method": method, "seed": 0}
                scores = summarise(score_test_cases(run, data, splits["test"], keys, str(device)))
                record = {
                    "benchmark": "gpu_benchmark",
                    "date": stamp,
                    **keys,
                    "n_filters": settings.n_filters,
                    "amp_dtype": run.amp_dtype,
                    "iterations": len(run.log),
                    "skipped_steps": run.skipped_steps,
                    "train_seconds": round(run.seconds, 1),
                    "best_eval_dice": round(run.trainer.best_dice, 2),
                    "test_mean_dice": round(float(scores["mean_dice"].iloc[0]), 2),
                    "test_mean_asd": round(float(scores["mean_asd"].iloc[0]), 2),
                    "machine": machine,
                }
                print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / args.out.name).write_text(args.out.read_text())


if __name__ == "__main__":
    main()
