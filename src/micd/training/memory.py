"""What a training step needs of memory, as the memory benchmark recorded it, and the message
a training job ends with when its GPU runs out (docs/cluster.md, "Which GPU to ask for")."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from micd.training.loop import Trainer

# The records a message draws on: bench/memory_benchmark.py's CPU records and bench/gpu_check.py's
# GPU measurements. MICD_MEMORY_RECORDS names them (files joined by the path separator); else
# they are read where the workflow runs, the repository root. No records: the message says so.
MEMORY_RECORDS_VARIABLE = "MICD_MEMORY_RECORDS"
DEFAULT_RECORDS = (Path("bench/results/memory_benchmark.jsonl"), Path("bench/results/gpu_check.jsonl"))


def memory_record_files() -> tuple[Path, ...]:
    named = os.environ.get(MEMORY_RECORDS_VARIABLE)
    if named:
        return tuple(Path(part) for part in named.split(os.pathsep) if part)
    return DEFAULT_RECORDS


GIB = 2**30


def usable(record: dict) -> bool:
    """Whether a memory record says what a GPU needs: any GPU's, a CPU's in fp32, and a CPU's
    in 16-bit only where the CPU has bf16 instructions (without them its bf16 convolutions take
    a fallback path that needs more memory than fp32, bench/memory_benchmark.py)."""
    machine = record.get("machine") or {}
    return record["precision"] != "16bit" or "gpu" in machine or bool(machine.get("cpu_bf16"))


def _memory_records(paths: tuple[Path, ...]) -> list[dict]:
    records = []
    for path in paths:
        if path.is_file():
            for line in path.read_text().splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("benchmark") == "memory" and "error" not in record and usable(record):
                    records.append(record)
    return records


def recorded_needs(
    method: str, n_filters: int, patch: list[int], batch: str, paths: tuple[Path, ...] | None = None
) -> dict[str, tuple[float, str]]:
    """Per precision (``fp32``, ``16bit``): the GiB one step needs at this width, patch and batch,
    and where the number comes from; a GPU's measurement wins over the CPU's estimate."""
    needs: dict[str, tuple[float, str, bool]] = {}
    for r in _memory_records(memory_record_files() if paths is None else paths):
        if (r["method"], r["n_filters"], r["batch"]) != (method, n_filters, batch):
            continue
        on_gpu = str(r.get("memory_kind", "")).startswith("cuda")
        if r["kind"] == "estimate":
            mib = r["intercept_mib"] + r["mib_per_voxel"] * math.prod(patch)
            source = f"CPU estimate, extrapolated from {', '.join(r['measured'])}"
        elif r["patch_size"] == list(patch):
            mib = r["step_mib"]
            source = "measured on " + (r["machine"].get("gpu", "a GPU") if on_gpu else "the CPU")
        else:
            continue
        if r["precision"] not in needs or on_gpu >= needs[r["precision"]][2]:
            needs[r["precision"]] = (mib / 1024, f"{source}, {r['date'][:10]}", on_gpu)
    return {precision: (gib, source) for precision, (gib, source, _) in needs.items()}


def device_memory(device) -> str:
    import torch

    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        peak = torch.cuda.max_memory_allocated(device)
        return (
            f"{torch.cuda.get_device_name(device)}, {total / GIB:.1f} GiB, {peak / GIB:.1f} GiB allocated at the peak"
        )
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{total / GIB:.1f} GiB of RAM"


def out_of_memory_message(trainer: Trainer, paths: tuple[Path, ...] | None = None) -> str:
    s = trainer.settings
    method = trainer.run_info["method"]
    batch = f"{s.batch_labelled}+{s.batch_unlabelled if trainer.method.uses_unlabelled else 0}"
    patch = "x".join(map(str, s.patch_size))
    precision = f"{trainer.amp_dtype}".replace("torch.", "") if trainer.amp_dtype else "fp32"
    needs = recorded_needs(method, s.n_filters, s.patch_size, batch, paths)
    amp_lever = "train.amp: fp16 (16-bit autocast" + (", already on)" if trainer.amp_dtype else f", now {s.amp!r})")
    if needs:
        needed = "; ".join(
            f"{'16-bit autocast' if p == '16bit' else 'fp32'}: about {gib:.1f} GiB ({source})"
            for p, (gib, source) in sorted(needs.items(), reverse=True)
        )
        needed = f"The memory benchmark's records say one step of {method} at this size needs {needed}"
        needed += ", plus the CUDA context and the cuDNN workspace (about 1-2 GiB)."
    else:
        needed = f"The memory benchmark has no record of {method} at width {s.n_filters}, batch {batch}."
    return (
        f"error: out of memory training {method} (VNet width {s.n_filters}, patch {patch}, batch {batch}, "
        f"{precision}) at iteration {trainer.iteration + 1} on {trainer.device} ({device_memory(trainer.device)}). "
        f"{needed} Levers: {amp_lever}; a smaller train.patch_size (memory "
        "grows with its voxel count; every side divisible by 16); or a card with more memory, "
        f"resources.train.gpu_model (docs/cluster.md). {_what_remains(trainer)}"
    )


def _what_remains(trainer: Trainer) -> str:
    if trainer.checkpoint_path.is_file():
        return (
            f"Nothing was half-written: the checkpoint {trainer.checkpoint_path} is whole, and the job run again "
            "on a larger card resumes from it (a changed train.amp or patch size trains afresh)."
        )
    return "Nothing was half-written; no checkpoint was reached, so the job run again starts afresh."
