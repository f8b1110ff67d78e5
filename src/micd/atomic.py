"""Atomic outputs: a file or directory is either complete or absent, never half written.

Everything is written to a temporary sibling and moved into place with :func:`os.replace`,
so an interrupted job (a crash, SIGKILL, a full disk) leaves the previous state untouched.
Temporaries are named ``.<name>.tmp-<host>-<pid>-<tag>`` (``.old-`` for a folder being
replaced); the next write of the same path removes those of writers no longer running.

A stage that replaces its output folder whole (:func:`stage_output_dir`) marks the folder with
``.micd-output`` naming the stage, and replaces only a folder it wrote itself: never one that
holds other files, nor one that is, holds or lies inside one of its inputs.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from micd.errors import DiskFullError, case_error

OUTPUT_MARKER = ".micd-output"  # in an output folder: "micd <stage>", the stage that wrote it


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; it replaces ``path`` only if the block succeeds.

    Usage::

        with atomic_path(out) as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = path.with_name(f"{_temporary_prefix(path, 'tmp')}{uuid.uuid4().hex}")
    try:
        with disk_full_named(path.parent, path.name):
            yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def disk_full_named(folder: Path, what: str) -> Iterator[None]:
    """Turn a write failing for want of space into :class:`DiskFullError` naming the folder."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # named again by each enclosing block: the user sees the output they asked for, not a temporary
        lack = "disk full" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        raise DiskFullError(
            exc.errno,
            f"{lack}: no space left in {folder} for {what}; the earlier {what} there (if any) is unchanged: "
            "free some space there and run the command again",
        ) from None


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``out_dir`` on success.

    Usage::

        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("...")

    If the block raises, the temporary directory is removed and ``out_dir`` is untouched.
    An existing ``out_dir`` is replaced only once the new one is complete.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    with disk_full_named(out_dir.parent, out_dir.name):
        tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(out_dir, "tmp"), dir=out_dir.parent))
    try:
        with disk_full_named(out_dir.parent, out_dir.name):
            yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's mode is private; use the usual one
        if out_dir.exists():
            old = out_dir.with_name(f"{_temporary_prefix(out_dir, 'old')}{uuid.uuid4().hex}")
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporary_prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporaries an earlier, killed writer of ``path`` left beside it (only names
    this module makes for ``path``; not those of a writer still running on this host)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)-(?:(?P<host>.+)-(?P<pid>\d+)-)?[0-9a-z_]+")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        found = pattern.fullmatch(candidate.name)
        if not found or candidate.is_symlink() or _still_writing(found["host"], found["pid"]):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
        print(f"removed {candidate}, left by an interrupted earlier run", flush=True)
    return removed


def _still_writing(host: str | None, pid: str | None) -> bool:
    if host != socket.gethostname() or pid is None:
        return False  # older micd's names carry no writer; one on another host is not running here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def stage_output_dir(
    out_dir: Path, stage: str, inputs: Iterable[Path] = (), earlier_markers: Iterable[str] = ()
) -> Iterator[Path]:
    """:func:`atomic_dir` for the output folder of ``micd <stage>``, checked first by
    :func:`check_output_dir` and marked with :data:`OUTPUT_MARKER` when complete."""
    check_output_dir(out_dir, stage, inputs, earlier_markers)
    with atomic_dir(out_dir) as tmp:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text(f"micd {stage}\n")


def check_output_dir(
    out_dir: Path, stage: str, inputs: Iterable[Path] = (), earlier_markers: Iterable[str] = ()
) -> None:
    """Refuse an output folder ``micd <stage>`` may not replace whole: one that is a file, is or
    holds one of ``inputs`` or lies inside an input folder, or is not empty and was not written
    by this stage (its marker, or one of ``earlier_markers``: files only this stage writes)."""
    out_dir = Path(out_dir)
    target = out_dir.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target or target in source.parents:
            relation = "is" if source == target else "holds"
            raise case_error(
                None,
                out_dir,
                f"the output folder {relation} the input {given}, and micd {stage} replaces its output folder "
                "whole: choose another folder",
            )
        if source.is_dir() and source in target.parents:
            raise case_error(
                None, out_dir, f"the output folder lies inside the input folder {given}: choose a folder outside it"
            )
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise case_error(None, out_dir, f"expected a folder for the output of micd {stage}, found a file")
    if not any(out_dir.iterdir()):
        return
    writer = written_by(out_dir)
    if writer == stage or any((out_dir / name).is_file() for name in earlier_markers):
        return
    found = f"it was written by micd {writer}" if writer else f"it has no {OUTPUT_MARKER} naming micd {stage}"
    raise case_error(
        None,
        out_dir,
        f"the output folder is not empty and not an earlier micd {stage} output ({found}); micd replaces its "
        "output folder whole and never deletes what it did not write: choose a new or empty folder",
    )


def written_by(out_dir: Path) -> str | None:
    """The stage named by an output folder's marker, or None without one."""
    marker = Path(out_dir) / OUTPUT_MARKER
    if not marker.is_file() or marker.is_symlink():
        return None
    words = marker.read_text(errors="replace").split()
    return words[1] if len(words) == 2 and words[0] == "micd" else None
