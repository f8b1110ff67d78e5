"""The benchmark's records: bench/history/benchmark_summary.py (one row per finished run, gathered
across parts run apart, each run's small outputs archived beside the recorded tables) and
bench/history/join_tables.py (tables of parts run apart joined into one and ranked against DHC's)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
HISTORY = ROOT / "bench" / "history"


def write_run(results: Path, ratio: int, method: str, seed: int, eval_dice: list[float], finished=True) -> Path:
    run = results / "synthetic_benchmark" / "runs" / f"{ratio}p" / method / f"seed{seed}"
    run.mkdir(parents=True)
    log = [{"iteration": i, "compute_s": 0.5 + 0.1 * i, "data_s": 0.01} for i in range(3)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    epochs = [5 * (i + 1) for i in range(len(eval_dice))]
    pd.DataFrame({"epoch": epochs, "eval_mean_dice": eval_dice}).to_csv(run / "validation.csv", index=False)
    (run / "metrics.csv").write_text("case,class,dice\ncase_0001,Li,91.0\n")
    if finished:
        compute = {"device": "cpu", "cpu_capability": "AVX2"}
        provenance = {"data_sha256": f"{ratio:02d}" + "ab" * 31, "compute": compute, "created": "2026-12-01T10:00:00"}
        torch.save({"provenance": provenance}, run / "model.pt")
    return run


def summarise(results: Path, out: Path, archive: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(HISTORY / "benchmark_summary.py"),
        "--results",
        str(results),
        "--out",
        str(out),
        "--archive",
        str(archive),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_rows_gather_across_results_folders_and_runs_are_archived(tmp_path):
    out, archive = tmp_path / "runs.csv", tmp_path / "archive"
    first, second = tmp_path / "session1", tmp_path / "session2"
    write_run(first, 5, "dhc", 0, [10.0, 30.0, 25.0, 28.0])
    write_run(first, 10, "micd", 0, [20.0, 40.0, 41.0, 42.0])
    summarise(first, out, archive)

    # a later session, a new results folder: MICD at 10 % again, CPS new, DHC gone from disk
    write_run(second, 10, "micd", 0, [22.0, 44.0, 45.0, 47.0])
    write_run(second, 10, "cps", 0, [5.0, 6.0, 7.0, 8.0])
    write_run(second, 10, "uamt", 0, [1.0], finished=False)
    done = summarise(second, out, archive, "--figure", str(tmp_path / "curves.png"))

    assert "skipping" in done.stdout and "uamt" in done.stdout
    table = pd.read_csv(out)
    assert list(zip(table["ratio"], table["method"])) == [(5, "dhc"), (10, "cps"), (10, "micd")]
    micd = table[table["method"] == "micd"].iloc[0]
    assert micd["best_eval_dice"] == 47.0 and micd["last_quarter_gain"] == 2.0  # the new run replaced the old
    dhc = table[table["method"] == "dhc"].iloc[0]
    assert dhc["best_eval_dice"] == 30.0 and dhc["best_epoch"] == 10 and dhc["iterations"] == 3
    assert dhc["data_sha256"] == "05ababababab" and dhc["cpu_capability"] == "AVX2"

    archived = archive / "synthetic_benchmark" / "runs"
    assert sorted(str(p.relative_to(archived)) for p in archived.glob("*p/*/seed*")) == [
        "10p/cps/seed0",
        "10p/micd/seed0",
        "5p/dhc/seed0",
    ]
    assert pd.read_csv(archived / "10p/micd/seed0/validation.csv")["eval_mean_dice"].max() == 47.0
    assert (archived / "5p/dhc/seed0/metrics.csv").read_text().startswith("case,class,dice")
    assert json.loads((archived / "5p/dhc/seed0/provenance.json").read_text())["compute"]["cpu_capability"] == "AVX2"
    assert not (archived / "10p/uamt").exists()
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def join(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HISTORY / "join_tables.py"), *args], capture_output=True, text=True)


@pytest.mark.slow
def test_part_tables_join_in_config_order_and_rank_against_dhc(tmp_path):
    recorded = pd.read_csv(ROOT / "bench" / "results" / "synthetic_benchmark_results.csv")  # the 5 % table, 18 rows
    last_rows = ["adsh", "crest", "simis", "acisis", "cld", "dhc", "distdw", "diffdw", "micd"]
    second, first = recorded[recorded["method"].isin(last_rows)], recorded[~recorded["method"].isin(last_rows)]
    second.iloc[::-1].to_csv(tmp_path / "second.csv", index=False)  # out of order on purpose
    first.to_csv(tmp_path / "first.csv", index=False)

    done = join(str(tmp_path / "second.csv"), str(tmp_path / "first.csv"), "--out", str(tmp_path / "joined"))
    assert done.returncode == 0, done.stderr
    joined = pd.read_csv(tmp_path / "joined.csv")
    assert list(joined["method"]) == list(recorded["method"])  # config/benchmark.yaml's order
    assert joined["dice_mean"].tolist() == recorded["dice_mean"].tolist()
    # the twelve semi-supervised rows DHC's AMOS 5 % column has (the upper bound left out):
    # rho 0.54, as docs/benchmark.md reports it
    spearman = json.loads(done.stdout)["spearman"]["5"]
    assert len(spearman["methods"]) == 12 and "V-Net (fully)" not in spearman["methods"]
    assert spearman["rho"] == 0.538
    markdown = (tmp_path / "joined.md").read_text()
    assert "AMOS 5 % column: 0.54 over the 12 semi-supervised methods" in markdown
    assert markdown.count("| 5 % |") == 18

    overlap = join(str(tmp_path / "first.csv"), str(tmp_path / "first.csv"), "--out", str(tmp_path / "twice"))
    assert overlap.returncode != 0 and "the tables overlap: fully at 5 %" in overlap.stderr
    assert not (tmp_path / "twice.md").exists()


@pytest.mark.slow
def test_mask_grid_is_drawn_from_the_archived_cells(tmp_path):
    """bench/history/archived_sensitivity.py: the cells archived so far, named as the workflow names
    them (the configured mask is ``micd`` itself), the others listed as missing."""
    recorded = pd.read_csv(
        ROOT / "bench" / "results" / "synthetic_benchmark" / "runs" / "10p" / "micd" / "seed0" / "metrics.csv"
    )
    runs = tmp_path / "synthetic_benchmark" / "runs" / "5p"
    for name, shift in (("micd", 0.0), ("micd_mask30_block32", -10.0)):
        (runs / name / "seed0").mkdir(parents=True)
        cell = recorded.assign(ratio=5, method=name, dice=recorded["dice"] + shift)
        cell.to_csv(runs / name / "seed0" / "metrics.csv", index=False)
    (runs / "micd_mask70_block8" / "seed0").mkdir(parents=True)  # a cell still training: no metrics.csv

    command = [sys.executable, str(HISTORY / "archived_sensitivity.py"), "--archive", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert listed["archived"] == ["micd", "micd_mask30_block32"] and len(listed["missing"]) == 7
    cells = pd.read_csv(tmp_path / "synthetic_benchmark_mask_sensitivity.csv").set_index(["mask_ratio", "mask_block"])
    micd = cells.loc[(0.5, 8), "mean_dice"]  # config/benchmark.yaml's mask: ratio 0.5, 8-voxel blocks
    assert abs(micd - cells.loc[(0.3, 32), "mean_dice"] - 10.0) < 1e-6 and len(cells) == 2
    assert (tmp_path / "synthetic_benchmark_mask_sensitivity.png").stat().st_size > 10_000

    empty = subprocess.run([*command[:2], "--archive", str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode != 0 and "no cell of the mask grid is archived" in empty.stderr


def test_the_grid_parts_train_every_cell_of_the_configured_grid_once():
    """bench/history/benchmark_parts.sh names the grid's cells for its parts grid1..grid5; they must be the
    workflow's names of config/benchmark.yaml's grid, each once, or a part would train a run the
    heat map never reads."""
    from archived_sensitivity import resolved_config

    from micd.training.runs import sensitivity_variants

    grid = sensitivity_variants(resolved_config([ROOT / "config" / "benchmark.yaml"]))
    script = (HISTORY / "benchmark_parts.sh").read_text()
    cells = re.search(r"^GRID=\(([^)]*)\)", script, re.MULTILINE).group(1).split()
    assert sorted(cells) == sorted(grid) and len(cells) == len(set(cells)) == 9
    assert "grid[1-5])" in script  # five parts of two cells: the nine cells
