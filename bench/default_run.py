"""Wall time and peak memory of the README's run command on the default config, from scratch.

Runs ``snakemake --profile profiles/local`` in a fresh copy of the working tree's workflow
files (so ``results/`` of the checkout is untouched), polls the resident memory of the whole
process tree every 0.2 s, and appends one JSON record to ``bench/results/default_run.jsonl``
with the machine it ran on. The run's results tables (the main one and the per-organ one, Markdown
and LaTeX) and figures, with their provenance sidecars, are copied to ``docs/figures/``, where the
README shows them.

    .venv/bin/python bench/default_run.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from micd.provenance import machine_description

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "profiles", "envs", "report")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="micd-bench-") as tmp:
        work = Path(tmp)
        for name in WORKFLOW_FILES:
            source = ROOT / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, work / name)
        load_at_start = os.getloadavg()[0]  # other work on the machine slows the run: say how much there was
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--profile", "profiles/local"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        stderr = process.stderr.read() if process.stderr else ""
        if process.returncode != 0:
            sys.exit(f"the default run failed:\n{stderr[-3000:]}")
        jobs = {}
        for tsv in sorted((work / "results" / "benchmarks").rglob("*.tsv")):
            lines = tsv.read_text().splitlines()
            jobs[tsv.stem] = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
        table = (work / "results" / "tables" / "synthetic_results.md").read_text()
        shown = ROOT / "docs" / "figures"
        shown.mkdir(parents=True, exist_ok=True)
        tables = [  # Markdown and LaTeX, each with its sidecar: the HTML and CSV are the report's and the data's
            path
            for name in ("synthetic_results", "synthetic_results_per_organ")
            for ext in ("md", "tex")
            for path in (work / "results" / "tables").glob(f"{name}.{ext}*")
        ]
        for path in [*tables, *(work / "results" / "figures").glob("synthetic_*")]:
            shutil.copy2(path, shown)
    record = {
        "benchmark": "default_run",
        "code_version": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "command": "snakemake --profile profiles/local",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "load_average_at_start": round(load_at_start, 2),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak / 2**20),
        "train_jobs_s": {name: float(row["s"]) for name, row in jobs.items()},
        "train_jobs_max_rss_mib": {name: float(row["max_rss"]) for name, row in jobs.items()},
    }
    out = ROOT / "bench" / "results" / "default_run.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))
    print(table)


if __name__ == "__main__":
    main()
