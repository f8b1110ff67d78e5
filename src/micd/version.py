"""What ``micd --version`` prints: the package version and, run from a checkout, its commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import micd
from micd.provenance import code_version


def _tracked_by_git(package_dir: Path) -> bool:
    """Whether the package's own files are tracked by a git checkout (an editable install), not
    merely installed somewhere inside one (a virtual environment in a clone's folder)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "__init__.py"],
            cwd=package_dir,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def version_text() -> str:
    """``0.1.0 (commit 5930609)``, ``-dirty`` after the commit where tracked files were changed;
    ``0.1.0 (no commit: not run from a git checkout)`` for an installed copy."""
    if _tracked_by_git(Path(micd.__file__).parent):
        described = code_version()
        if described != micd.__version__:
            return f"{micd.__version__} (commit {described})"
    return f"{micd.__version__} (no commit: not run from a git checkout)"
