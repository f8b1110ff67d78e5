"""The device-slot lock folder (micd.devices) another user could tamper with (issue 35 item 5): it is
private to the user by default, one that is not is refused, and a lock file is never opened
through a link. Each case runs the real ``micd infer`` up to its slot."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from micd.devices import DEFAULT_LOCK_DIR

MICD = Path(sys.executable).parent / "micd"


def infer_with_slot(tmp_path: Path, lock_dir: Path) -> subprocess.CompletedProcess:
    """``micd infer`` taking slot 7 in ``lock_dir`` (its missing data fails after the slot)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    missing = str(tmp_path / "missing")
    options = ["--model", missing, "--data-dir", missing, "--cases", missing, "--out", missing]
    slot = ["--device-slots", "7", "--device-lock-dir", str(lock_dir), "--device-wait", "0"]
    return subprocess.run([str(MICD), "infer", *options, *slot], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_the_default_lock_folder_is_the_users_own_and_private(tmp_path) -> None:
    assert DEFAULT_LOCK_DIR.name == f"micd-device-slots-{os.getuid()}"
    lock_dir = tmp_path / "locks"
    done = infer_with_slot(tmp_path, lock_dir)
    assert done.stdout.startswith("device slot: GPU 7 of 7"), done.stdout + done.stderr
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((lock_dir / "gpu7.lock").stat().st_mode) == 0o600


def test_a_link_planted_as_a_lock_file_is_not_followed(tmp_path, snapshot, assert_unchanged) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    victim = tmp_path / "thesis.tex"
    victim.write_text("\\chapter{Introduction}")
    (lock_dir / "gpu7.lock").symlink_to(victim)
    before = snapshot(tmp_path)
    done = infer_with_slot(tmp_path, lock_dir)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        f"error: cannot open the lock file {lock_dir / 'gpu7.lock'} (Too many levels of symbolic links); "
        "a link there is never followed"
    )
    assert_unchanged(tmp_path, before)


def test_a_lock_folder_every_user_may_write_to_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    lock_dir = tmp_path / "micd-device-slots"
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)  # as micd made its shared folder before
    before = snapshot(tmp_path)
    done = infer_with_slot(tmp_path, lock_dir)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: the device lock folder {lock_dir} is writable by every user (mode drwxrwxrwt): make it private "
        f"(chmod 700 {lock_dir}) or choose a folder of your own (resources.device_slots.lock_dir, --device-lock-dir)"
    )
    assert_unchanged(tmp_path, before)


def test_a_lock_folder_of_another_user_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o755)
    os.chown(lock_dir, 65534, 65534)  # nobody's
    before = snapshot(tmp_path)
    done = infer_with_slot(tmp_path, lock_dir)
    assert done.returncode == 1
    assert f"error: the device lock folder {lock_dir} belongs to user id 65534, not to you (0)" in done.stderr
    assert_unchanged(tmp_path, before)


def test_a_lock_folder_that_is_a_link_is_refused(tmp_path, snapshot, assert_unchanged) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    done = infer_with_slot(tmp_path, tmp_path / "locks")
    assert done.returncode == 1
    assert f"the device lock folder {tmp_path / 'locks'} is a link or a file, not a folder" in done.stderr
    assert_unchanged(tmp_path, before)
