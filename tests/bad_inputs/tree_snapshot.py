"""A snapshot of a folder tree, to show that a stage changed nothing outside its own output."""

import hashlib
from pathlib import Path

Snapshot = dict[str, str]


def tree_snapshot(root: Path, exclude: tuple[str, ...] = ()) -> Snapshot:
    """Every path under root (relative, POSIX) -> "dir", "link:<target>" or the file's sha256.

    Paths equal to or under a relative path in exclude are left out (the stage's own output)."""
    root = Path(root)
    snapshot: Snapshot = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(relative == skip or relative.startswith(skip.rstrip("/") + "/") for skip in exclude):
            continue
        if path.is_symlink():
            snapshot[relative] = f"link:{path.readlink()}"
        elif path.is_dir():
            snapshot[relative] = "dir"
        else:
            snapshot[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def snapshot_difference(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable lines for what was added, removed or changed between two snapshots."""
    lines = [f"removed {path}" for path in sorted(before.keys() - after.keys())]
    lines += [f"added {path}" for path in sorted(after.keys() - before.keys())]
    lines += [f"changed {path}" for path in sorted(before.keys() & after.keys()) if before[path] != after[path]]
    return lines
