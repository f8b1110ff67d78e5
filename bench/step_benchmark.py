"""Time and memory of one training iteration, per method, size and precision.

For each (method, size, precision) it builds the real engine (``micd.training.loop.Trainer``) on
random preprocessed volumes of the size's grid, runs warm-up iterations, then times
``--iterations`` iterations through the real TorchIO queues, splitting each into data wait
and compute, and records iterations per second and peak memory (CUDA allocator peak on a GPU,
the process's peak RSS on the CPU). Results are appended to
``bench/results/step_benchmark.jsonl`` with the machine's name.

    python bench/step_benchmark.py                      # this CPU machine: cpu size, fp32
    python bench/step_benchmark.py --sizes cpu protocol --precisions fp32 amp   # a GPU node

Sizes: ``tiny`` (patch 16x32x32, width 2: the test suite's), ``cpu`` (patch 32x48x48, VNet width
8, the synthetic benchmark's model) and ``protocol`` (patch 64x128x128 from an 80x160x160 grid,
width 32, 2 + 2 batch: DHC's protocol).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import tempfile
from pathlib import Path

import torch
from in_process import NUM_CLASSES, amp_name, random_cases

from micd.devices import resolve_device
from micd.provenance import machine_description
from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    "tiny": {"grid": (32, 48, 48), "patch_size": [32, 32, 32], "n_filters": 2},
    "cpu": {"grid": (32, 64, 64), "patch_size": [32, 48, 48], "n_filters": 8},
    "protocol": {"grid": (80, 160, 160), "patch_size": [64, 128, 128], "n_filters": 32},
}


def measure(
    method: str,
    size: str,
    precision: str,
    data_dir: Path,
    ids: list[str],
    args,
    channels_last: bool = True,
    compile: bool = False,
) -> dict:
    spec = SIZES[size]
    settings = TrainSettings(
        max_epochs=1000,
        iterations_per_epoch=10_000,
        n_filters=spec["n_filters"],
        patch_size=spec["patch_size"],
        samples_per_volume=args.samples_per_volume,
        queue_length=args.queue_length,
        num_workers=args.workers,
        amp="fp16" if precision == "amp" else "off",
        channels_last=channels_last,
        compile=compile,
        device=args.device,
    )
    data = TrainData(data_dir, labelled=ids[:2], unlabelled=ids[2:], eval=[], num_classes=NUM_CLASSES)
    method_settings = {"mask_block": min(16, spec["patch_size"][0])} if method == "micd" else {}
    name = f"{method}-{size}-{precision}-{'cl' if channels_last else 'c'}{'-compiled' if compile else ''}"
    trainer = Trainer(method, method_settings, settings, data, Path(args.scratch) / name, seed=0)
    trainer.method.initialise(torch.ones(NUM_CLASSES, dtype=torch.float64), len(data.unlabelled))
    trainer.method.train()
    streams = trainer.streams()
    device = trainer.device
    for _ in range(args.warmup):
        trainer.step(streams, settings.lr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = [trainer.step(streams, settings.lr) for _ in range(args.iterations)]
    data_s = [r["data_s"] for r in rows]
    compute_s = [r["compute_s"] for r in rows]
    step_s = [d + c for d, c in zip(data_s, compute_s)]
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "method": method,
        "size": size,
        "precision": precision if trainer.amp_dtype else "fp32",
        "amp_dtype": amp_name(trainer),
        "channels_last": channels_last,
        "compiled": compile,
        "patch_size": spec["patch_size"],
        "n_filters": spec["n_filters"],
        "batch": f"{settings.batch_labelled}+{settings.batch_unlabelled if trainer.method.uses_unlabelled else 0}",
        "workers": args.workers,
        "iterations": args.iterations,
        "step_s_median": round(statistics.median(step_s), 4),
        "data_wait_s_median": round(statistics.median(data_s), 4),
        "compute_s_median": round(statistics.median(compute_s), 4),
        "data_wait_fraction": round(sum(data_s) / sum(step_s), 4),
        "iterations_per_s": round(len(step_s) / sum(step_s), 3),
        "peak_memory_mib": round(peak / 2**20),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["supervised", "micd"])
    p.add_argument("--sizes", nargs="+", default=["cpu"], choices=sorted(SIZES))
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "amp"])
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--samples-per-volume", type=int, default=4)
    p.add_argument("--queue-length", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "step_benchmark.jsonl")
    p.add_argument("--scratch", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="micd-step-") as tmp:
        args.scratch = args.scratch or tmp
        for size in args.sizes:
            data_dir = Path(tmp) / f"data-{size}"
            ids = random_cases(data_dir, SIZES[size]["grid"], n=8)
            for method in args.methods:
                for precision in args.precisions:
                    record = {
                        "benchmark": "step",
                        "date": stamp,
                        "machine": machine_description(device),
                        **measure(method, size, precision, data_dir, ids, args),
                    }
                    print(json.dumps(record), flush=True)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
