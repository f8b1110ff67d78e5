"""The real workflow, end to end, on a tiny configuration of the embedded synthetic data set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from micd.evaluation.metrics import summarise

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
    "methods": ["supervised", "micd"],
    "seeds": [0],
    "preprocess": {"grid": [16, 32, 32]},
    "train": {
        "max_epochs": 2,
        "iterations_per_epoch": 2,
        "n_filters": 2,
        "patch_size": [16, 32, 32],
        "window_stride": [16, 16, 16],
        "validate_every": 1,
        "queue_length": 4,
    },
    "method_settings": {"micd": {"mask_block": 8}},
}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    snakemake(workdir, "--cores", "2")
    return workdir


def test_dry_run_plans_the_default_target_and_lint_is_clean(tmp_path):
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default))
    dry = snakemake(tmp_path, "-n")
    for rule in ("synthesise", "convert", "preprocess", "split", "train", "infer", "metrics", "report"):
        assert f"rule {rule}:" in dry.stdout + dry.stderr
    lint = snakemake(tmp_path, "--lint")
    assert "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    graph = snakemake(tmp_path, "--rulegraph")
    assert graph.stdout.lstrip().startswith("digraph")
    for rule in ("synthesise", "train", "report"):
        assert f'label = "{rule}"' in graph.stdout


def test_ablation_and_sensitivity_targets_plan_every_variant(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    dry = snakemake(tmp_path, "-n", "-p", "ablation", "sensitivity")
    out = dry.stdout + dry.stderr
    for variant in (
        "dhc",
        "micd_mcpc",
        "micd_mcpc_cfc",
        "micd_mcpc_cmd",
        "micd",
        "micd_mask30_block8",
        "micd_mask70_block32",
    ):
        assert f"runs/5p/{variant}/seed0/model.pt" in out
    assert "--method micd --variant micd_mcpc_cmd" in out.replace("\n", " ")


def test_tiny_workflow_writes_table_and_figure_from_its_own_numbers(tiny_run: Path):
    results = tiny_run / "results"
    table = pd.read_csv(results / "tables" / "synthetic_results.csv")
    per_case = pd.concat(
        [pd.read_csv(p) for p in sorted(results.glob("synthetic/runs/*/*/seed*/metrics.csv"))], ignore_index=True
    )
    assert len(per_case) == 4 * 2 * 15  # runs x test cases x foreground classes
    expected = summarise(per_case).set_index(["ratio", "method"])
    assert len(table) == 4
    for row in table.itertuples():
        assert row.dice_mean == pytest.approx(expected.loc[(row.ratio, row.method), "mean_dice"])
        assert row.asd_mean == pytest.approx(expected.loc[(row.ratio, row.method), "mean_asd"])
    markdown = (results / "tables" / "synthetic_results.md").read_text()
    assert "micd" in markdown and "supervised" in markdown
    png = (results / "figures" / "synthetic_results_dice_per_class.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_each_run_keeps_a_checkpoint_a_log_and_its_provenance(tiny_run: Path):
    run = tiny_run / "results" / "synthetic" / "runs" / "5p" / "micd" / "seed0"
    model = torch.load(run / "model.pt", weights_only=False)
    assert model["provenance"]["method"] == "micd" and model["provenance"]["seed"] == 0
    assert model["provenance"]["labelled_cases"] and model["train_settings"]["n_filters"] == 2
    assert (run / "state" / "checkpoint.pt").is_file()
    log = pd.read_json(run / "train_log.jsonl", lines=True)
    assert len(log) == 4 and {"sup", "mcpc", "cfc", "cmd", "data_s", "compute_s"} <= set(log.columns)
    predicted = sorted(p.name.removesuffix(".nii.gz") for p in (run / "predictions").glob("*.nii.gz"))
    test_ids = sorted((tiny_run / "results" / "synthetic" / "splits" / "test.txt").read_text().split())
    assert predicted == test_ids


def test_a_second_run_has_nothing_to_do(tiny_run: Path):
    dry = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
