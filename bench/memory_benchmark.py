"""Peak memory of one training step of every registered method, each method in its own process.

For each (size, method, precision) a child process builds the real engine (``micd.training.loop.Trainer``)
on random preprocessed volumes, runs a warm-up step on 16x32x32 patches (it creates the
gradients and the optimisers' momentum buffers and loads the kernels, at little cost; DePL,
whose state has the patch's shape, warms up at the measured patch: ``--warmup same``; a skipped
warm-up is repeated), loads the next batch, then runs one step at the measured patch and
reports what that step needed:

* ``step_mib``, on the CPU: the peak of the bytes of live tensors during the step
  (``LiveTensorBytes``, ``memory_kind: live_tensor_peak``): the weights (and teachers), the last
  step's gradients, SGD momentum, the batch, activations, the autocast copies of the weights and
  every temporary, each storage counted while it lives. That is what
  ``torch.cuda.max_memory_allocated`` counts on a GPU, which adds its CUDA context, the cuDNN
  workspace and its allocator's rounding and fragmentation. ``rss_step_mib`` beside it is the
  host's view: the child's peak resident memory minus that before the model was built, which
  adds oneDNN's scratch and what glibc's allocator keeps.
* on a GPU, ``step_mib`` is ``torch.cuda.max_memory_allocated`` over the step, and
  ``tensor_peak_mib`` the same count as the CPU's (bench/gpu_check.py's ``memory`` stage runs
  this function in one process, resetting the peak between methods).

Precisions: ``fp32``, and ``16bit``: autocast at bf16 on the CPU (the engine never autocasts on
the CPU; only this benchmark does, to measure the 16-bit activations), fp16 with the gradient
scaler on a GPU (the protocol's ``train.amp: fp16``). bf16 and fp16 tensors have the same size.
Only a CPU with bf16 instructions (AVX512-BF16 or AMX: the record's ``machine.cpu_bf16``) gives a
16-bit number worth keeping: without them bf16 convolutions take a slow fallback path, slower
and larger than fp32 (on an AVX2 machine, 2026-12-03, the lower bound's step at 16x64x128 took
383 s and 1787 MiB in bf16 against 4.8 s and 1045 MiB in fp32), and the README's table leaves
such records out.

Sizes: ``protocol`` (config/paper.yaml: VNet width 32, 64x128x128 patches, 2 + 2 batch, fully
4 + 0, 16 classes as AMOS) is more than a 24 GiB machine holds for the larger methods, so on
the CPU it is measured at 16x64x128 and 16x128x128 and extrapolated linearly in the patch's
voxel count to 64x128x128: every feature map of the VNet is the patch divided by a power of two
(every side divisible by 16), so activations scale with the voxel count and the fit's intercept
is the model and optimiser state; ``protocol_full`` measures the protocol's patch itself, for
the methods whose step fits the machine, as a check of the line. ``gpu_benchmark`` (config/benchmark_gpu.yaml: width 16,
32x48x48) is measured at its own patch; ``tiny`` (the test suite's, width 2) is extrapolated like
the protocol, from 16x32x32 and 32x32x32 to 64x32x32.

    python bench/memory_benchmark.py                           # every method, protocol, fp32 and 16bit
    python bench/memory_benchmark.py --sizes gpu_benchmark --methods supervised dhc micd

Records (one per measured step and one per extrapolated estimate) are appended to
``bench/results/memory_benchmark.jsonl`` as they finish, with the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import torch
from in_process import NUM_CLASSES, amp_name, random_cases
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from micd.devices import resolve_device
from micd.methods import METHODS
from micd.provenance import machine_description
from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer
from micd.training.memory import usable
from micd.training.runs import layered_config, resolve_run

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "tiny": {"n_filters": 2, "patch_size": [64, 32, 32], "measured": [[16, 32, 32], [32, 32, 32]]},
    "gpu_benchmark": {"n_filters": 16, "patch_size": [32, 48, 48], "measured": [[32, 48, 48]]},
    "protocol": {"n_filters": 32, "patch_size": [64, 128, 128], "measured": [[16, 64, 128], [16, 128, 128]]},
    # the protocol's patch itself, for the methods that fit the machine: a check of the line
    "protocol_full": {"n_filters": 32, "patch_size": [64, 128, 128], "measured": [[64, 128, 128]]},
}
PRECISIONS = ("fp32", "16bit")
WARMUP_PATCH = [16, 32, 32]  # the smallest whose deepest maps have more than one voxel
MAX_ATTEMPTS = 12


def protocol_batches() -> dict[str, dict[str, int]]:
    """Each method's batch sizes in config/paper.yaml's AMOS runs (fully: 4 labelled)."""
    paper = layered_config([ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"])
    batch_keys = ("batch_labelled", "batch_unlabelled")
    return {
        name: {k: v for k, v in resolve_run(paper, "amos", name).train_settings.items() if k in batch_keys}
        for name in METHODS
    }


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive on one device type, and their peak, while the mode is
    on: what ``torch.cuda.max_memory_allocated`` counts on a GPU (less its rounding to 512-byte
    blocks), counted alike on any device and free of the host allocator's slack and oneDNN's
    scratch. Every operator's outputs are counted once per storage until the storage dies;
    storages alive before are counted from ``add`` on."""

    def __init__(self, device_type: str) -> None:
        super().__init__()
        self.device_type = device_type
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def add(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != self.device_type:
            return
        storage = tensor.untyped_storage()
        key = storage._cdata  # the storage's address: views share it
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += self.live[key]
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.add(value)
        return out


def held_tensors(trainer: Trainer, batch) -> list[torch.Tensor]:
    """What is alive when a step begins: weights, buffers, the last step's gradients, the
    optimisers' momentum, tensors the method keeps as attributes, the batch."""
    nets = [trainer.method, *trainer.method.students().values(), *trainer.method.teachers()]
    tensors = [t for net in nets for t in (*net.parameters(), *net.buffers())]
    tensors += [p.grad for net in nets for p in net.parameters() if p.grad is not None]
    tensors += [t for opt in trainer.optimisers.values() for st in opt.state.values() for t in st.values()]
    for module in trainer.method.modules():
        for value in vars(module).values():
            tensors += [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
    return [t for t in [*tensors, batch.image, batch.label] if isinstance(t, torch.Tensor)]


def measured_step(trainer: Trainer, lr: float) -> tuple[dict, LiveTensorBytes, float]:
    """One step at the trainer's patch with its tensors counted (the batch loaded before the
    count: on a GPU only the batch itself is on the device); its log row, count and seconds."""
    streams = trainer.streams()
    batch = trainer._next_batch(streams)
    trainer._next_batch = lambda _streams: batch
    tensors = LiveTensorBytes(trainer.device.type)
    for t in held_tensors(trainer, batch):
        tensors.add(t)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with tensors:
        row = trainer.step(streams, lr)
    del trainer._next_batch
    return row, tensors, time.perf_counter() - started


def state_bytes(trainer: Trainer) -> dict[str, int]:
    """Bytes of the weights (students and teachers) and of the optimisers' momentum buffers."""
    tensors = {}
    for net in [*trainer.method.students().values(), *trainer.method.teachers()]:
        for t in [*net.parameters(), *net.buffers()]:
            tensors[t.data_ptr()] = t.numel() * t.element_size()
    optimiser = sum(
        t.numel() * t.element_size()
        for opt in trainer.optimisers.values()
        for state in opt.state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )
    return {"weights": sum(tensors.values()), "optimiser_state": optimiser}


def step_memory(
    method: str,
    precision: str,
    patch: list[int],
    n_filters: int,
    batch: dict[str, int],
    data_dir: Path,
    ids: list[str],
    scratch: Path,
    device: str = "auto",
    warmup_patch: list[int] | None = WARMUP_PATCH,
) -> dict:
    """One warm-up step at ``warmup_patch`` (None: at ``patch``, for methods keeping state
    shaped like the patch, as DePL), then the peak memory of one step at ``patch``."""
    on_cuda = resolve_device(device).type == "cuda"
    settings = TrainSettings(
        max_epochs=1000,
        iterations_per_epoch=10_000,
        n_filters=n_filters,
        patch_size=list(warmup_patch or patch),
        queue_length=4,
        amp="fp16" if precision == "16bit" else "off",
        device=device,
        **batch,
    )
    # 4 labelled cases: a queue pass holds one patch per case, so a batch of 4 needs 4 of them
    data = TrainData(data_dir, labelled=ids[:4], unlabelled=ids[4:], eval=[], num_classes=NUM_CLASSES)
    if on_cuda:
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = resident_bytes()
    method_settings = {"mask_block": min(16, patch[0])} if method == "micd" else {}
    # A skipped step changes no weight and leaves no gradients: the step after it would begin
    # without them, and one skipped for its loss has no backward pass. On the CPU in bf16 a deep
    # convolution's weight gradient is now and then not finite, at random (a kernel's, seen on
    # 2026-12-04 with the VNet alone), and a non-finite forward pass leaves BatchNorm statistics
    # that spoil every later step; so each try builds the trainer afresh, warms it up and
    # measures with another seed, until neither step was skipped.
    for attempt in range(1, MAX_ATTEMPTS + 1):
        settings.patch_size = list(warmup_patch or patch)
        run = scratch / f"{method}-{precision}-{attempt}"
        trainer = Trainer(method, method_settings, settings, data, run, seed=attempt - 1)  # a fresh draw each try
        if precision == "16bit" and not on_cuda:
            trainer.amp_dtype = torch.bfloat16  # the engine keeps the CPU in fp32; measured here only
        trainer.method.initialise(torch.ones(NUM_CLASSES, dtype=torch.float64), len(data.unlabelled))
        trainer.method.train()
        warmed = "skipped" not in trainer.step(trainer.streams(), settings.lr)
        settings.patch_size = list(patch)
        if warmed:
            row, tensors, seconds = measured_step(trainer, settings.lr)
            if "skipped" not in row:
                break
    else:
        raise RuntimeError(f"{method} {precision} at {patch}: a step was skipped in each of {MAX_ATTEMPTS} tries")
    extra = {"tensor_peak_mib": round(tensors.peak / 2**20)}
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated() - baseline, "cuda_max_memory_allocated"
        extra["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20)
    else:
        peak, kind = tensors.peak, "live_tensor_peak"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        extra |= {"rss_step_mib": round((rss - baseline) / 2**20), "rss_before_model_mib": round(baseline / 2**20)}
    states = state_bytes(trainer)
    loss = row["losses"]["loss"]
    record = {
        "method": method,
        "precision": precision,
        "amp_dtype": amp_name(trainer),
        "n_filters": n_filters,
        "patch_size": list(patch),
        "batch": f"{settings.batch_labelled}+{settings.batch_unlabelled if trainer.method.uses_unlabelled else 0}",
        "num_classes": NUM_CLASSES,
        "step_mib": round(peak / 2**20),
        "memory_kind": kind,
        "warmup_patch": list(warmup_patch or patch),
        "attempts": attempt,  # trainers built, warmed up and measured until neither step was skipped
        **extra,
        "weights_mib": round(states["weights"] / 2**20),
        "optimiser_state_mib": round(states["optimiser_state"] / 2**20),
        "step_s": round(seconds, 2),
        "finite_loss": loss is not None and math.isfinite(loss),
    }
    del trainer
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    return record


def child(spec: dict) -> None:
    """Measure one step in this process and print its record as the last line of stdout."""
    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory(prefix="micd-memory-") as tmp:
        grid = tuple(spec["patch"])
        ids = random_cases(Path(tmp) / "data", grid, n=8)
        record = step_memory(
            spec["method"],
            spec["precision"],
            spec["patch"],
            spec["n_filters"],
            spec["batch"],
            Path(tmp) / "data",
            ids,
            Path(tmp) / "runs",
            spec["device"],
            None if spec.get("warmup") == "same" else WARMUP_PATCH,
        )
    print(json.dumps(record), flush=True)


def measure_in_child(spec: dict, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit status {done.returncode}: {' | '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolate(points: list[dict], patch: list[int]) -> dict:
    """The line through (voxels, step_mib) of the measured patches, at ``patch``'s voxel count."""
    xs = [math.prod(p["patch_size"]) for p in points]
    ys = [p["step_mib"] for p in points]
    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    intercept = ys[0] - slope * xs[0]
    return {
        "step_mib": round(intercept + slope * math.prod(patch)),
        "intercept_mib": round(intercept),
        "mib_per_voxel": slope,
        "extrapolation": "linear in the patch's voxel count through the measured patches",
        "measured": {"x".join(map(str, p["patch_size"])): p["step_mib"] for p in points},
    }


CARDS_GIB = (16, 24, 32, 40, 48, 80, 141)  # common GPU memory sizes (a "24 GB" card has 24 GiB)
# on top of the step's tensors: the CUDA context (about 1 GiB) and 10 % for the cuDNN workspace
# and the caching allocator's fragmentation
CONTEXT_GIB, WORKSPACE_FRACTION = 1.0, 0.10


def card_for(need_gib: float) -> str:
    fits = [c for c in CARDS_GIB if c >= need_gib * (1 + WORKSPACE_FRACTION) + CONTEXT_GIB]
    return f"{fits[0]} GB" if fits else f"more than {CARDS_GIB[-1]} GB"


def resource_table(path: Path, size: str = "protocol") -> str:
    """The README's table: per method, the latest estimate at ``size`` in fp32 and 16-bit, and
    the smallest common card holding each step with the CUDA context and the workspace added
    (``card_for``); methods without a record are left out."""
    latest: dict[tuple[str, str], dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        kind = "estimate" if len(SIZES[size]["measured"]) > 1 else "measured"
        if r.get("size") == size and r.get("kind") == kind and "error" not in r and usable(r):
            latest[r["method"], r["precision"]] = r
    rows = ["| method | batch | fp32 | 16-bit | card for 16-bit | card for fp32 |", "|---|---|---:|---:|---|---|"]
    for method, cls in METHODS.items():
        fp32, half = latest.get((method, "fp32")), latest.get((method, "16bit"))
        if not (fp32 or half):
            continue
        gib = {k: r["step_mib"] / 1024 if r else None for k, r in (("fp32", fp32), ("16bit", half))}
        shown = {k: f"{v:.1f} GiB" if v is not None else "not measured" for k, v in gib.items()}
        cards = {k: card_for(v) if v is not None else "" for k, v in gib.items()}
        batch = (fp32 or half)["batch"]
        rows.append(
            f"| {cls.display_name} (`{method}`) | {batch} | {shown['fp32']} | {shown['16bit']} "
            f"| {cards['16bit']} | {cards['fp32']} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["protocol"], choices=sorted(SIZES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each child process")
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one child may take")
    p.add_argument(
        "--warmup",
        choices=["small", "same"],
        default="small",
        help="warm-up step at 16x32x32 (small) or at the measured patch (same: for DePL, whose state has the patch's shape)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory_benchmark.jsonl")
    p.add_argument("--table", action="store_true", help="print the README's table from --out's records")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.table:
        print(resource_table(args.out, args.sizes[0]))
        return
    device = resolve_device(args.device)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    host = machine_description(device, threads=args.threads)
    batches = protocol_batches()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        record = {"benchmark": "memory", "date": stamp, **record, "machine": host}
        print(json.dumps({k: v for k, v in record.items() if k != "machine"}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")

    for size in args.sizes:
        spec = SIZES[size]
        for precision in args.precisions:
            for method in args.methods:
                batch = batches.get(method, {}) if size.startswith("protocol") else {}
                points = []
                for patch in spec["measured"]:
                    job = {"method": method, "precision": precision, "patch": patch, "n_filters": spec["n_filters"]}
                    job |= {"batch": batch, "threads": args.threads, "device": args.device, "warmup": args.warmup}
                    result = measure_in_child(job, args.timeout)
                    log({"kind": "measured", "size": size, **job, **result})
                    if "error" not in result:
                        points.append(result)
                if len(spec["measured"]) > 1 and len(points) == len(spec["measured"]):
                    estimate = {"method": method, "precision": precision, "n_filters": spec["n_filters"]}
                    estimate |= {"patch_size": spec["patch_size"], "batch": points[0]["batch"]}
                    log({"kind": "estimate", "size": size, **estimate, **extrapolate(points, spec["patch_size"])})


if __name__ == "__main__":
    main()
