"""MICD's mask-sensitivity table and heat map from the archived runs of the synthetic benchmark.

The grid's nine MICD runs take longer than one session here, and a session's ``results/`` is
not always kept, so the grid is trained in parts (``bench/history/benchmark_parts.sh grid1 ... grid5``) and
each finished cell's per-case ``metrics.csv`` is archived by ``bench/history/benchmark_summary.py``.
This draws what the workflow's ``sensitivity`` target draws, from the archive: the same grid
names and settings (micd.training.runs.sensitivity_variants on the resolved workflow config), the same
table and figure code. Cells not archived yet are listed and left blank.

    python bench/history/archived_sensitivity.py [--ratio 5] [--out bench/results/synthetic_benchmark_mask_sensitivity]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from snakemake.utils import update_config, validate

from micd.report.build import build_mask_sensitivity
from micd.training.runs import sensitivity_variants

ROOT = Path(__file__).resolve().parents[2]
# the settings the provenance sidecars record, as the workflow's report_config does
PROVENANCE_KEYS = ["split", "preprocess", "train", "method_settings", "sensitivity"]


def resolved_config(configfiles: list[Path]) -> dict:
    """The workflow's config: config/config.yaml, the layered files, the schema's defaults."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for path in configfiles:
        update_config(config, yaml.safe_load(path.read_text()))
    validate(config, str(ROOT / "config" / "schema.yaml"), set_default=True)
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", type=Path, nargs="+", default=[ROOT / "config" / "benchmark.yaml"])
    p.add_argument("--archive", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--dataset", default="synthetic_benchmark")
    p.add_argument("--ratio", type=int, default=5, help="the labelled percentage the grid was trained at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="path without suffix (default: <archive>/<dataset>_mask_sensitivity)")
    args = p.parse_args()
    config = resolved_config(args.configfile)
    grid = sensitivity_variants(config)
    runs = args.archive / args.dataset / "runs" / f"{args.ratio}p"
    metrics = {name: runs / name / f"seed{args.seed}" / "metrics.csv" for name in grid}
    archived = {name: path for name, path in metrics.items() if path.is_file()}
    if not archived:
        raise SystemExit(f"no cell of the mask grid is archived under {runs} (expected e.g. {metrics['micd']})")
    out = args.out or args.archive / f"{args.dataset}_mask_sensitivity"
    build_mask_sensitivity(
        list(archived.values()),
        {name: cell["settings"] for name, cell in grid.items()},
        out.with_suffix(".csv"),
        [out.with_suffix(".png")],
        {key: config[key] for key in PROVENANCE_KEYS},
    )
    missing = sorted(set(grid) - set(archived))
    print(json.dumps({"cells": len(grid), "archived": sorted(archived), "missing": missing}, indent=1))


if __name__ == "__main__":
    main()
