"""What keeps one run in one process: its lock, and a clean stop when SLURM preempts it."""

from __future__ import annotations

import fcntl
import os
import platform
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from micd.errors import RunInUseError


@contextmanager
def stop_on_sigterm(request_stop: Callable[[], None]):
    """While training, SIGTERM (how SLURM preempts) asks for a checkpoint and a clean stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: request_stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def one_trainer_per_run(state_dir: Path):
    """Hold the run's lock while training. Two trainers of one run (the same job submitted
    twice, a requeued job whose first copy still runs, two workflows started with --nolock)
    would resume the same checkpoint and replace each other's logs; the second is refused.
    The lock is the kernel's, so it dies with its holder: a killed run leaves none behind."""
    with open(state_dir / "trainer.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunInUseError(
                f"run {state_dir.parent} is being trained by {holder} (lock {handle.name}); "
                "wait for it to end or stop it, then start this run again: it resumes from the checkpoint"
            ) from None
        except OSError as exc:  # a file system without locks (some NFS and Lustre mounts)
            print(f"no lock on {handle.name} ({exc}): training without one", flush=True)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()}\n")
        handle.flush()
        yield
