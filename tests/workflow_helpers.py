"""What the tests that run the real workflow share: the tiny configuration and a snakemake runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "datasets": {
        "synthetic": {
            "source": "synthetic",
            "family": "synthetic",
            "synthetic": {
                "n_train": 20,
                "n_validation": 2,
                "seed": 3,
                "options": {"inplane": [40, 48], "slices": [18, 24]},
            },
        }
    },
    "ratios": [5, 10],
    "methods": ["fully", "supervised", "micd"],
    "seeds": [0],
    "preprocess": {"grid": [16, 32, 32]},
    "train": {
        "max_epochs": 1,  # epochs 0 and 1, as DHC's loop counts
        "iterations_per_epoch": 2,
        "n_filters": 2,
        "patch_size": [16, 32, 32],
        "window_stride": [16, 16, 16],
        "validate_every": 1,
        "queue_length": 4,
    },
    "method_settings": {"micd": {"mask_block": 8}},
}


WORKFLOW_FILES = ("Snakefile", "rules", "config", "report", "envs", "profiles", "slurm")
"""What a copy of the workflow needs to run as from the repository root (``slurm`` is a link)."""


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow's files (not results/ or .snakemake/) in ``destination``, so a
    test can run snakemake there exactly as a user types it in the root, leaving the checkout as it is."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_symlink():
            (destination / name).symlink_to(os.readlink(source))
        elif source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    return destination


def snakemake_command(workdir: Path, *args: str, configfiles: Sequence[str | Path] = ("config.yaml",)) -> list[str]:
    """The snakemake command line for ``workdir``; relative ``configfiles`` are in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *(str(workdir / path) for path in configfiles),
        *args,
    ]


def snakemake_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin first (the rules call `micd`), plus ``extra``."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    configfiles: Sequence[str | Path] = ("config.yaml",),
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_command(workdir, *args, configfiles=configfiles),
        cwd=workdir,
        env=env or snakemake_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


MACHINE_CHANGES = "MICD_TESTS_CHANGE_MACHINE"


def machine_changes_allowed() -> bool:
    """Whether the tests may change this machine: install Debian packages, start a SLURM as root.
    Only where ``MICD_TESTS_CHANGE_MACHINE=1`` asks (CI's .ci/run does); else they skip, saying so."""
    import os

    return os.environ.get(MACHINE_CHANGES) == "1"


def apt_install(*packages: str) -> str | None:
    """Install Debian packages with apt-get (refreshing a stale index once); None on success,
    else why not (not asked to, not root, or apt-get's own words)."""
    import os
    import subprocess

    if not machine_changes_allowed():
        return f"installing {', '.join(packages)} would change this machine; {MACHINE_CHANGES}=1 lets the tests"
    if os.geteuid() != 0:
        return f"installing {', '.join(packages)} needs root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return f"apt-get could not install {', '.join(packages)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return None


def dry_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake -n ARGS`` as a user types it in the root of a copy of the workflow."""
    command = [sys.executable, "-m", "snakemake", "-n", *args]
    return subprocess.run(command, cwd=root, env=snakemake_env(), capture_output=True, text=True, timeout=300)
