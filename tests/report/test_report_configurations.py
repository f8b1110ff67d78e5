"""Tables and figures of two configurations side by side: each is kept under results/configs/{dataset}/{tag}/,
the stable names hold the latest one's (rules/report.smk: keep_tables, keep_figure)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import TINY_CONFIG, snakemake

KEPT_TABLES = [
    f"tables/synthetic_results{name}"
    for name in (".md", ".tex", ".html", ".csv", "_per_organ.md", "_per_organ.tex", "_per_organ.html")
]
KEPT_FIGURES = [
    f"figures/synthetic_{name}.{ext}"
    for name in ("results_dice_per_class", "results_training_curves", "dice_vs_ratio", "qualitative")
    for ext in ("png", "pdf")
]


def kept_folders(workdir: Path) -> list[Path]:
    return sorted((workdir / "results" / "configs" / "synthetic").iterdir())


def test_two_configurations_keep_their_tables_and_figures_side_by_side(tiny_run: Path, tmp_path: Path):
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # the finished runs, metadata and all
    (first,) = kept_folders(workdir)
    for name in KEPT_TABLES + KEPT_FIGURES:
        kept, latest = first / name, workdir / "results" / name
        assert kept.read_bytes() == latest.read_bytes(), name
        assert (first / f"{name}.provenance.json").is_file()

    fewer = {**TINY_CONFIG, "methods": ["supervised", "micd"]}  # a second configuration: other rows
    (workdir / "fewer.yaml").write_text(yaml.safe_dump(fewer))
    done = snakemake(workdir, "--cores", "1", "tables", "figures", configfiles=("fewer.yaml",))
    assert "rule train:" not in done.stdout + done.stderr  # the runs are there: only the report is rebuilt

    folders = kept_folders(workdir)
    assert len(folders) == 2 and first in folders
    (second,) = [folder for folder in folders if folder != first]
    rows = {
        folder: pd.read_csv(folder / "tables" / "synthetic_results.csv")["method"].unique().tolist()
        for folder in folders
    }
    assert rows[first] == ["fully", "supervised", "micd"] and rows[second] == ["supervised", "micd"]
    latest = workdir / "results"
    for name in KEPT_TABLES + KEPT_FIGURES:
        assert (second / name).read_bytes() == (latest / name).read_bytes(), name
        assert (first / name).read_bytes() != (second / name).read_bytes(), name
    markdown = (first / "tables" / "synthetic_results.md").read_text()
    assert "| V-Net (fully) |" in markdown and "| V-Net (fully) |" not in (latest / KEPT_TABLES[0]).read_text()


@pytest.mark.workflow
def test_a_folder_of_another_configuration_is_not_written_from_this_one(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    other = "results/configs/synthetic/00000000/tables/synthetic_results.md"
    dry = snakemake(tmp_path, "-n", other, check=False)
    assert dry.returncode != 0
    assert "results/configs/synthetic/00000000/ keeps the outputs of another configuration" in dry.stdout + dry.stderr
