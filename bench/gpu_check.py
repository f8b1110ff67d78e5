"""The prepared GPU check (issue 16): one command, at most 8 minutes on one H100 or H200.

1. ``workflow``: the tiny workflow end to end on the device, without Snakemake (the GPU machine
   has none): a small synthetic archive is generated, converted, preprocessed and split, every
   registered method trains a few iterations through the real engine (mixed precision on a
   GPU), segments the test cases and is scored. Each method's record says whether its losses
   stayed finite, its seconds, and its test Dice (meaningless after so few steps: it shows that
   inference and scoring ran).
2. ``memory``: the peak GPU memory (``torch.cuda.max_memory_allocated``) of one training step of
   every registered method at ``--size``'s full patch, in fp32 and fp16 mixed precision: the
   steps bench/memory_benchmark.py measures on the CPU at reduced depth and extrapolates, so a
   lent GPU replaces that estimate with a measurement (records with ``"benchmark": "memory"``).
3. ``steps``: every registered method at ``--size`` (``protocol``: VNet width 32, 64x128x128
   patches, 2 + 2 batch, TorchIO queues with ``--workers`` loader processes): median step time
   split into data wait and compute, iterations per second and peak memory, in fp32 and in
   mixed precision (fp16 with a gradient scaler, the protocol's); MICD also without
   channels-last tensors and, with ``--compile``, compiled, so each throughput choice is
   measured where it matters.

Every record is appended to ``--out`` (default ``bench/results/gpu_check.jsonl``) with the
device's name and the versions, and printed as it is made; ``$OUT``, where set, gets a copy.
The test suite runs ``--size tiny`` on the CPU (tests/bench/test_gpu_check.py), so the script cannot
rot between lent GPUs. On the GPU machine: ``bash bench/gpu.sh`` (it installs the carried wheels).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from in_process import random_cases, score_test_cases, synthetic_set, train_run
from memory_benchmark import PRECISIONS, measure_in_child, protocol_batches, step_memory
from memory_benchmark import SIZES as MEMORY_SIZES
from step_benchmark import SIZES, measure

from micd.data.splits import make_splits
from micd.devices import resolve_device
from micd.methods import METHODS
from micd.provenance import machine_description
from micd.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_GRID = (32, 48, 48)
RATIO = 25  # labelled percent of the tiny set
WORKFLOW_PATCH = [32, 32, 32]


def tiny_workflow(root: Path, device: torch.device, methods: list[str], iterations: int, log) -> None:
    """Generate, convert, preprocess and split a tiny set; train, segment and score each method."""
    started = time.perf_counter()
    # 10 training cases: 2 eval, 2 labelled, 6 unlabelled (Adsh's bank needs at least 4)
    data = synthetic_set(root / "data", 10, 2, seed=0, grid=WORKFLOW_GRID, inplane=(48, 56), slices=(32, 36))
    splits = make_splits(data.train, data.test, [RATIO], seed=0, eval_fraction=0.2)
    log(
        {
            "stage": "workflow_data",
            "seconds": round(time.perf_counter() - started, 2),
            "splits": {k: len(v) for k, v in splits.items()},
        }
    )
    for method in methods:
        started = time.perf_counter()
        settings = TrainSettings(
            max_epochs=1,
            iterations_per_epoch=iterations,
            n_filters=2,
            dropout=0.0,
            patch_size=WORKFLOW_PATCH,
            window_stride=[16, 16, 16],
            queue_length=4,
            validate_every=1,
            validation="sliding_window",
            early_stop_patience=None,
            amp="fp16",
            device=str(device),
        )
        method_settings = {"mask_block": 8} if method == "micd" else {}
        run_info = {"dataset": "gpu_check", "ratio": RATIO}
        run = train_run(method, method_settings, settings, data, splits, RATIO, root / "runs" / method, run_info)
        keys = {"dataset": "gpu_check", "ratio": RATIO, "method": method, "seed": 0}
        table = score_test_cases(run, data, splits["test"], keys, str(device))
        log(
            {
                "stage": "workflow",
                "method": method,
                "iterations": len(run.log),
                "finite_losses": run.finite_losses,
                "skipped_steps": run.skipped_steps,
                "amp_dtype": run.amp_dtype,
                "test_mean_dice": round(float(table["dice"].mean()), 3),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )


def step_times(root: Path, size: str, methods: list[str], args, log) -> None:
    data_dir = root / f"data-{size}"
    ids = random_cases(data_dir, SIZES[size]["grid"], n=8)
    args.scratch = str(root / "steps")
    precisions = ["fp32", "amp"] if args.device_type == "cuda" else ["fp32"]
    for method in methods:
        for precision in precisions:
            log({"stage": "steps", **measure(method, size, precision, data_dir, ids, args)})
    if "micd" in methods:  # the throughput choices, on the most expensive step
        precision = precisions[-1]
        log({"stage": "steps", **measure("micd", size, precision, data_dir, ids, args, channels_last=False)})
        if args.compile:
            log({"stage": "steps", **measure("micd", size, precision, data_dir, ids, args, compile=True)})


def step_memory_peaks(root: Path, size: str, methods: list[str], args, log) -> None:
    """Peak memory of one step of each method at the size's patch (bench/memory_benchmark.py): on
    a GPU ``torch.cuda.max_memory_allocated`` in this process, its peak reset for each step, so
    the GPU measures what the CPU records extrapolate; elsewhere each step in its own process."""
    spec = MEMORY_SIZES[size]
    batches = protocol_batches() if size == "protocol" else {}
    data_dir = root / f"memory-{size}"
    ids = random_cases(data_dir, tuple(spec["patch_size"]), n=8) if args.device_type == "cuda" else []
    for precision in PRECISIONS:
        for method in methods:
            job = {"method": method, "precision": precision, "patch": spec["patch_size"]}
            job |= {"n_filters": spec["n_filters"], "batch": batches.get(method, {})}
            if args.device_type == "cuda":
                try:
                    result = step_memory(
                        **job,
                        data_dir=data_dir,
                        ids=ids,
                        scratch=root / "memory-runs",
                        device=args.device,
                        warmup_patch=None,  # on a GPU the warm-up at the measured patch costs nothing
                    )
                except torch.cuda.OutOfMemoryError as exc:
                    result = {"error": f"out of memory: {str(exc)[:200]}"}
                    torch.cuda.empty_cache()
            else:
                result = measure_in_child(job | {"threads": torch.get_num_threads(), "device": args.device}, 900)
            log({"stage": "memory", "benchmark": "memory", "kind": "measured", **job, **result})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="protocol", choices=sorted(SIZES), help="size of the step measurements")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--workflow-iterations", type=int, default=4)
    p.add_argument("--iterations", type=int, default=8, help="timed iterations per step measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: 4 on a GPU, 0 on the CPU)")
    p.add_argument("--samples-per-volume", type=int, default=1)
    p.add_argument("--queue-length", type=int, default=16)
    p.add_argument("--compile", action="store_true", help="also time MICD's step compiled")
    p.add_argument("--skip", nargs="*", default=[], choices=["workflow", "memory", "steps"])
    p.add_argument("--memory-methods", nargs="+", default=list(METHODS), help="methods of the memory stage")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.jsonl")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device_type = device.type
    args.workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine_description(device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine": machine}), flush=True)

    def log(record: dict) -> None:
        record = {"benchmark": "gpu_check", "date": stamp, "size": args.size, **record, "machine": machine}
        print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="micd-gpu-check-") as tmp:
        if "workflow" not in args.skip:
            tiny_workflow(Path(tmp) / "workflow", device, args.methods, args.workflow_iterations, log)
        if "memory" not in args.skip and args.size in MEMORY_SIZES:
            step_memory_peaks(Path(tmp), args.size, args.memory_methods, args, log)
        if "steps" not in args.skip:
            step_times(Path(tmp), args.size, args.methods, args, log)
    log({"stage": "done", "seconds": round(time.perf_counter() - started, 1)})
    if os.environ.get("OUT"):
        shutil.copy(args.out, Path(os.environ["OUT"]) / args.out.name)


if __name__ == "__main__":
    main()
