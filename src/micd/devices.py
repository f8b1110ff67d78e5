"""One GPU per job on a workstation with several GPUs and no scheduler.

Snakemake gives local jobs no GPU ids, so with ``--resources gpu=4`` four trainings would all
start on device 0. Instead each training and inference job takes a device slot before CUDA
initialises: it holds an exclusive ``flock`` on ``<lock_dir>/gpu<id>.lock`` for its lifetime,
which the kernel releases when the process ends in any way (SIGKILL and crashes included), and
sets ``CUDA_VISIBLE_DEVICES`` to that id for itself, so ``cuda`` is that device. A job finding
every slot taken tries again every few seconds for ``wait_minutes``, then fails with an error
naming each device's holder (0: fail at once). Under SLURM (``SLURM_JOB_ID`` set) no slot is
taken: the scheduler has assigned the job's GPU.

Device ids are CUDA's in PCI bus order, the order ``nvidia-smi`` lists (``CUDA_DEVICE_ORDER`` is
set to ``PCI_BUS_ID`` unless already set). Which ids may be used: ``auto`` (those in an inherited
``CUDA_VISIBLE_DEVICES``, else every device CUDA sees), ``none`` (take no slot) or a list such
as ``0,2,3``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "micd-device-slots"
POLL_SECONDS = 5.0
# The workflow hands config `resources.device_slots` to its jobs through the environment, not the
# rules' commands: how a job finds its GPU changes nothing it computes, so it must not make
# Snakemake's code and params triggers plan finished trainings again.
SLOT_ENVIRONMENT = {
    "devices": "MICD_DEVICE_SLOTS",
    "wait_minutes": "MICD_DEVICE_WAIT",
    "lock_dir": "MICD_DEVICE_LOCK_DIR",
}


class DeviceBusyError(RuntimeError):
    """Every allowed device stayed taken for the whole wait."""


@dataclass
class DeviceSlot:
    device: str
    lock_file: Path
    fd: int


# slots held by this process: the open descriptor is the lock, kept until the process ends
_HELD: list[DeviceSlot] = []


def parse_devices(spec: str) -> list[str] | None:
    """``auto`` -> None (discover), ``none`` -> [] (no slot), ``0,2`` -> ["0", "2"]."""
    spec = spec.strip()
    if spec == "auto":
        return None
    if spec == "none":
        return []
    ids = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in ids):
        raise ValueError(f"device slots must be 'auto', 'none' or GPU ids such as '0,2,3', got {spec!r}")
    return ids


def visible_devices() -> list[str]:
    """The devices a job may choose from when none are configured: an inherited
    ``CUDA_VISIBLE_DEVICES``'s entries, else every device CUDA sees, counted in a child process
    so that this one's CUDA is not initialised before ``CUDA_VISIBLE_DEVICES`` is set."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        return [d.strip() for d in inherited.split(",") if d.strip()]
    import torch

    if not torch.backends.cuda.is_built():
        return []
    env = dict(os.environ, CUDA_DEVICE_ORDER=os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID"))
    count = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return [str(i) for i in range(int(count.stdout.strip() or 0))] if count.returncode == 0 else []


def _try_lock(lock_dir: Path, device: str) -> DeviceSlot | None:
    path = lock_dir / f"gpu{device}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # who holds it, for the error of a job that finds every slot taken
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
    return DeviceSlot(device, path, fd)


def _holder(lock_dir: Path, device: str) -> str:
    try:
        return (lock_dir / f"gpu{device}.lock").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def claim_device(
    devices: list[str] | None,
    lock_dir: Path = DEFAULT_LOCK_DIR,
    wait_minutes: float = 10.0,
    log=lambda message: print(message, flush=True),
) -> DeviceSlot | None:
    """Take a free slot of ``devices`` (None: :func:`visible_devices`) and make this process use
    only that GPU; None when there is nothing to choose (no GPU, ``none``, or under SLURM)."""
    if os.environ.get("SLURM_JOB_ID"):
        log(f"device slot: none taken, SLURM job {os.environ['SLURM_JOB_ID']} has its GPUs assigned")
        return None
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    devices = visible_devices() if devices is None else devices
    if not devices:
        return None
    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(lock_dir, 0o1777)  # every user's jobs on the workstation share the slots
    deadline = time.monotonic() + wait_minutes * 60
    announced = False
    while True:
        for device in devices:
            slot = _try_lock(lock_dir, device)
            if slot is not None:
                _HELD.append(slot)
                os.environ["CUDA_VISIBLE_DEVICES"] = device
                log(
                    f"device slot: GPU {device} of {','.join(devices)} ({slot.lock_file}); CUDA_VISIBLE_DEVICES={device}"
                )
                return slot
        if time.monotonic() >= deadline:
            holders = "; ".join(f"GPU {d}: {_holder(lock_dir, d)}" for d in devices)
            raise DeviceBusyError(
                f"every allowed GPU ({','.join(devices)}) stayed taken for {wait_minutes:g} minutes: {holders}. "
                f"Start fewer GPU jobs at once (snakemake --resources gpu=N, N at most {len(devices)}), or "
                f"raise resources.device_slots.wait_minutes (locks in {lock_dir})"
            )
        if not announced:
            log(f"device slot: every allowed GPU ({','.join(devices)}) is taken; waiting up to {wait_minutes:g} min")
            announced = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.1)))
