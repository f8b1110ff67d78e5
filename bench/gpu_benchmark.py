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
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import device_info  # noqa: E402

from micd.data.classes import classes_for  # noqa: E402
from micd.data.convert import convert_archive  # noqa: E402
from micd.data.preprocess import preprocess  # noqa: E402
from micd.data.splits import make_splits  # noqa: E402
from micd.data.synthetic import generate_archive  # noqa: E402
from micd.devices import resolve_device  # noqa: E402
from micd.evaluation.measures import summarise  # noqa: E402
from micd.evaluation.metrics import score_run  # noqa: E402
from micd.inference.infer import InferenceSettings, predict_cases  # noqa: E402
from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer
from micd.training.runs import first_run_dataset, layered_config, resolve_run, training_cases  # noqa: E402

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
    machine = device_info(device)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    classes = classes_for(dataset["family"])
    synthetic = dataset["synthetic"]
    split = config.get("split", {})
    with tempfile.TemporaryDirectory(prefix="micd-gpu-benchmark-") as tmp:
        root = Path(tmp)
        generate_archive(root / "archive", synthetic["n_train"], synthetic["n_validation"], seed=synthetic["seed"])
        manifest = convert_archive(root / "archive", root / "converted")
        preprocess(manifest, root / "preprocessed", tuple(config["preprocess"]["grid"]), num_classes=len(classes))
        train_ids = [f"amos_{k:04d}" for k in range(1, synthetic["n_train"] + 1)]
        test_ids = [
            f"amos_{k:04d}"
            for k in range(synthetic["n_train"] + 1, synthetic["n_train"] + synthetic["n_validation"] + 1)
        ]
        for ratio in config["ratios"]:
            splits = make_splits(train_ids, test_ids, [ratio], split.get("seed", 0), split.get("eval_fraction", 0.1))
            for method in args.methods or config["methods"]:
                started = time.perf_counter()
                spec = resolve_run(config, name, method)
                settings = TrainSettings.from_dict({**spec.train_settings, **overrides})
                labelled, unlabelled = training_cases(
                    spec.method, splits["train"], splits[f"labelled_{ratio}p"], splits[f"unlabelled_{ratio}p"]
                )
                data = TrainData(root / "preprocessed", labelled, unlabelled, splits["eval"], len(classes))
                run = root / "runs" / f"{ratio}p" / method
                trainer = Trainer(spec.method, spec.method_settings, settings, data, run, seed=0)
                trainer.fit()
                trained = time.perf_counter() - started
                predict_cases(
                    run / "model.pt",
                    root / "preprocessed",
                    splits["test"],
                    run / "predictions",
                    InferenceSettings(original_grid=False),
                    str(device),
                )
                keys = {"dataset": name, "ratio": ratio, "method": method, "seed": 0}
                scores = summarise(
                    score_run(
                        run / "predictions", root / "preprocessed", splits["test"], classes, keys, run / "metrics.csv"
                    )
                )
                log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
                record = {
                    "benchmark": "gpu_benchmark",
                    "date": stamp,
                    **keys,
                    "n_filters": settings.n_filters,
                    "amp_dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None,
                    "iterations": len(log),
                    "skipped_steps": sum("skipped" in row for row in log),
                    "train_seconds": round(trained, 1),
                    "best_eval_dice": round(trainer.best_dice, 2),
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
