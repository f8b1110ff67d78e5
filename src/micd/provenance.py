"""Provenance carried by every result file, the machine a measurement ran on, and atomic writes
so no half-written file is left."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import micd
from micd.atomic import atomic_path

if TYPE_CHECKING:
    import torch

PACKAGES = ("micd", "torch", "torchio", "nibabel", "numpy", "scipy", "pandas", "snakemake")


def code_version() -> str:
    """``git describe`` of the checkout the package runs from, or the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(micd.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return micd.__version__


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def proc_value(path: str, key: str) -> str | None:
    """The value of the first ``key ...: value`` line of a /proc file; None where there is none."""
    file = Path(path)
    if file.is_file():
        for line in file.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (``platform.processor()`` elsewhere)."""
    return proc_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as /proc/cpuinfo gives them (none elsewhere)."""
    return set((proc_value("/proc/cpuinfo", "flags") or "").split())


def memory_gib() -> float | None:
    """The host's memory (``MemTotal`` of /proc/meminfo) in GiB, None where there is none."""
    total = proc_value("/proc/meminfo", "MemTotal:")
    return round(int(total.split()[0]) / 2**20, 1) if total else None


def provenance(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        **(extra or {}),
        "code_version": code_version(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    # through a Python file, so that a full disk raises OSError(ENOSPC) (micd.atomic names it),
    # not the C++ writer's "unexpected pos"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def compute_environment(device: "torch.device") -> dict[str, Any]:
    """Where a run computes: the same run can part in the last bits of its floats on another CPU
    instruction set or GPU, and then differ more and more as it trains."""
    import torch

    environment = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
    return environment


MACHINE_PACKAGES = ("numpy", "scipy", "torchio", "nibabel")


def machine_description(device: "torch.device | str | None" = None, threads: int | None = None) -> dict[str, Any]:
    """Where a measurement ran: every bench record's ``machine``. The :func:`compute_environment`
    a trained model records (the device, the CPU's model and instruction set, the threads, the GPU)
    and beside it the host, its cores and memory, whether the CPU has bf16 instructions (without
    them bf16 convolutions take a slow fallback path), a GPU's memory and its CUDA and cuDNN, and
    the versions of Python, PyTorch and the packages a measurement leans on. ``threads`` names the
    threads the measured processes use where they are not this one's (the memory benchmark's
    children)."""
    import torch

    device = torch.device(device or "cpu")
    environment = compute_environment(device)
    if threads is not None:
        environment["threads"] = threads
    machine = {"host": platform.node(), **environment}
    machine |= {"cpu_bf16": bool(cpu_flags() & {"avx512_bf16", "amx_bf16"}), "cores": os.cpu_count()}
    machine["memory_gib"] = memory_gib()
    if device.type == "cuda":
        machine["gpu_memory_mib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**20)
        machine |= {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    machine |= {"python": platform.python_version(), "torch": torch.__version__}
    machine["packages"] = package_versions(MACHINE_PACKAGES)
    return machine
