"""One GPU per job on a workstation with several GPUs and no scheduler.

Snakemake gives local jobs no GPU ids, so with ``--resources gpu=4`` four trainings would all
start on device 0. Instead each training and inference job takes a device slot before CUDA
initialises: it holds an exclusive ``flock`` on ``<lock_dir>/gpu<id>.lock`` for its lifetime,
which the kernel releases when the process ends in any way (SIGKILL and crashes included), and
sets ``CUDA_VISIBLE_DEVICES`` to that id for itself, so ``cuda`` is that device. A job finding
every slot taken tries again every few seconds for ``wait_minutes``, then fails with an error
naming each device's holder (0: fail at once). Under SLURM (``SLURM_JOB_ID`` set) no slot is
taken: the scheduler has assigned the job's GPU.

The lock folder is private to the user (mode 0700; by default ``<tmp>/micd-device-slots-<uid>``):
one that is a link, belongs to another user or is writable by every user is refused, as another
user could otherwise plant a link where a lock file goes and have a job overwrite its target;
lock files are opened without following links. Slots are therefore per user: jobs of two users
on one workstation do not see each other's (a scheduler such as SLURM shares GPUs between users).

Device ids are CUDA's in PCI bus order, the order ``nvidia-smi`` lists (``CUDA_DEVICE_ORDER`` is
set to ``PCI_BUS_ID`` unless already set). Which ids may be used: ``auto`` (those in an inherited
``CUDA_VISIBLE_DEVICES``, else every device CUDA sees), ``none`` (take no slot) or a list such
as ``0,2,3``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / f"micd-device-slots-{os.getuid()}"
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


class LockFolderError(ValueError):
    """A lock folder or lock file another user could tamper with."""


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
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise LockFolderError(
            f"cannot open the lock file {path} ({exc.strerror}); a link there is never followed"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockFolderError(f"the lock file {path} is not a regular file")
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
        fd = os.open(lock_dir / f"gpu{device}.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return "unknown"
    with os.fdopen(fd) as f:
        return f.read(1000).strip() or "unknown"


def private_lock_dir(lock_dir: Path) -> Path:
    """``lock_dir``, created private (0700) if missing; refused if another user could change it."""
    lock_dir = Path(lock_dir)
    if not lock_dir.exists() and not lock_dir.is_symlink():
        lock_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made by another job just now: judged below like any other
    found = os.lstat(lock_dir)
    advice = "choose a folder of your own (resources.device_slots.lock_dir, --device-lock-dir)"
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        raise LockFolderError(f"the device lock folder {lock_dir} is a link or a file, not a folder: {advice}")
    if found.st_uid != os.getuid():
        raise LockFolderError(
            f"the device lock folder {lock_dir} belongs to user id {found.st_uid}, not to you ({os.getuid()}): {advice}"
        )
    if found.st_mode & stat.S_IWOTH:
        raise LockFolderError(
            f"the device lock folder {lock_dir} is writable by every user (mode {stat.filemode(found.st_mode)}): "
            f"make it private (chmod 700 {lock_dir}) or {advice}"
        )
    return lock_dir


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
    lock_dir = private_lock_dir(lock_dir)
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


def resolve_device(name: str) -> "torch.device":
    """The torch device a run computes on: ``auto`` is the GPU where there is one."""
    import torch  # here: the workflow reads this module's slots without torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
