"""The real workflow, end to end, on a tiny configuration of the embedded synthetic data set."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from workflow_helpers import ROOT, TINY_CONFIG, snakemake

from micd.evaluation.measures import summarise

# every test here plans or runs the real workflow (tests/conftest.py: the slow tier)
pytestmark = pytest.mark.workflow

REPORT_RULES = ("table", "dice_per_class", "dice_vs_ratio", "training_curves", "qualitative")
TABLES = [f"tables/synthetic_results.{ext}" for ext in ("md", "tex", "html", "csv")] + [
    f"tables/synthetic_results_per_organ.{ext}" for ext in ("md", "tex", "html")
]
FIGURES = [
    f"figures/synthetic_{name}.png"
    for name in ("results_dice_per_class", "results_training_curves", "dice_vs_ratio", "qualitative")
]
PDFS = [figure.removesuffix(".png") + ".pdf" for figure in FIGURES]  # config figures.formats: [png, pdf]


def test_dry_run_plans_the_default_target_and_lint_is_clean(tmp_path):
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default))
    dry = snakemake(tmp_path, "-n")
    planned = ("synthesise", "convert", "preprocess", "split", "train", "infer", "metrics", *REPORT_RULES)
    for rule in planned:
        assert f"rule {rule}:" in dry.stdout + dry.stderr
    lint = snakemake(tmp_path, "--lint")
    assert "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    graph = snakemake(tmp_path, "--rulegraph")
    assert graph.stdout.lstrip().startswith("digraph")
    for rule in ("synthesise", "train", "table"):
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


def test_the_old_report_target_plans_the_tables_and_says_it_is_now_tables(tmp_path):
    """`snakemake report`, the tables target's old name for one release, plans what `snakemake tables`
    plans and says, in the plan too, that it is now `snakemake tables`."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    dry = snakemake(tmp_path, "-n", "report")
    out = dry.stdout + dry.stderr
    assert "`snakemake report` is now `snakemake tables`; the old name goes in the next release" in out
    assert "rule table:" in out and "rule dice_per_class:" not in out
    assert "tables/synthetic_results.md" in out and not (tmp_path / "results").exists()


def test_tiny_workflow_writes_table_and_figure_from_its_own_numbers(tiny_run: Path):
    results = tiny_run / "results"
    table = pd.read_csv(results / "tables" / "synthetic_results.csv")
    per_case = pd.concat(
        [pd.read_csv(p) for p in sorted(results.glob("synthetic/runs/*/*/seed*/metrics.csv"))], ignore_index=True
    )
    assert len(per_case) == 6 * 2 * 15  # runs x test cases x foreground classes
    expected = summarise(per_case).set_index(["ratio", "method"])
    assert len(table) == 6
    for row in table.itertuples():
        assert row.dice_mean == pytest.approx(expected.loc[(row.ratio, row.method), "mean_dice"])
        assert row.asd_mean == pytest.approx(expected.loc[(row.ratio, row.method), "mean_asd"])
    markdown = (results / "tables" / "synthetic_results.md").read_text()
    assert "| MICD |" in markdown and "| V-Net (labelled only) |" in markdown  # the papers' names
    assert "No published results exist for this data set." in markdown
    assert "\\begin{table}[t]" in (results / "tables" / "synthetic_results.tex").read_text()  # a column's width
    assert "\\begin{table*}[t]" in (results / "tables" / "synthetic_results_per_organ.tex").read_text()  # the page's
    for figure in FIGURES:
        with Image.open(results / figure) as image:
            image.verify()
    for pdf in PDFS:
        assert (results / pdf).read_bytes().startswith(b"%PDF-")
    for output in TABLES + FIGURES + PDFS:
        provenance = json.loads((results / f"{output}.provenance.json").read_text())
        assert provenance["output"] == Path(output).name and provenance["config"]["seeds"] == [0]
        assert provenance["packages"]["micd"] and provenance["code_version"]
        assert {(r["ratio"], r["method"]) for r in provenance["runs"]} == {
            (ratio, method) for ratio in (5, 10) for method in ("fully", "supervised", "micd")
        }


def test_the_upper_bound_is_trained_once_and_scored_at_every_ratio(tiny_run: Path):
    """`fully` trains on every training case whatever the ratio: one run, at the smallest ratio,
    copied into the larger ratios' folders."""
    runs = tiny_run / "results" / "synthetic" / "runs"
    trained, shared = runs / "5p" / "fully" / "seed0", runs / "10p" / "fully" / "seed0"
    model = torch.load(trained / "model.pt", weights_only=True)
    train_ids = (tiny_run / "results" / "synthetic" / "splits" / "train.txt").read_text().split()
    assert sorted(model["provenance"]["labelled_cases"]) == sorted(train_ids)
    logs = tiny_run / "results" / "logs" / "synthetic"
    assert (logs / "train_5p_fully_seed0.log").is_file() and not (logs / "train_10p_fully_seed0.log").exists()
    assert (logs / "share_10p_fully_seed0.log").is_file()
    for name in ("model.pt", "train_log.jsonl", "validation.csv"):
        assert (shared / name).read_bytes() == (trained / name).read_bytes()
    assert (shared / "metrics.csv").is_file() and not (shared / "state").exists()
    table = pd.read_csv(tiny_run / "results" / "tables" / "synthetic_results.csv").set_index(["ratio", "method"])
    assert table.loc[(5, "fully"), "dice_mean"] == pytest.approx(table.loc[(10, "fully"), "dice_mean"])


def test_each_run_keeps_a_checkpoint_a_log_and_its_provenance(tiny_run: Path):
    run = tiny_run / "results" / "synthetic" / "runs" / "5p" / "micd" / "seed0"
    model = torch.load(run / "model.pt", weights_only=True)
    assert model["provenance"]["method"] == "micd" and model["provenance"]["seed"] == 0
    assert model["provenance"]["labelled_cases"] and model["train_settings"]["n_filters"] == 2
    assert (run / "state" / "checkpoint.pt").is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all({"data_s", "compute_s"} <= set(row) for row in log)
    assert all(set(row["losses"]) == {"loss", "sup", "mcpc", "cfc", "cmd"} for row in log)
    assert all(set(row["diagnostics"]) == {"beta"} for row in log)
    predicted = sorted(p.name.removesuffix(".nii.gz") for p in (run / "predictions").glob("*.nii.gz"))
    test_ids = sorted((tiny_run / "results" / "synthetic" / "splits" / "test.txt").read_text().split())
    assert predicted == test_ids


def test_the_report_holds_every_table_and_figure(tiny_run: Path):
    snakemake(tiny_run, "--report", "report.html")
    page = (tiny_run / "report.html").read_text()
    assert "MICD and its baselines under DHC" in page  # report/workflow.rst
    landing = page[page.index("Data sets: ") :].split("</p>")[0].replace("\\n", " ")
    assert landing == (  # prose, not Python lists
        "Data sets: synthetic; labelled ratios: 5 %, 10 %; methods: V-Net (fully), V-Net (labelled only), MICD; "
        "seeds: 0."
    )
    assert "Wilcoxon signed-rank" in page and "Qualitative comparison" in page  # captions
    for output in TABLES + FIGURES:
        assert Path(output).name in page


def test_rebuilding_the_figures_runs_no_training(tiny_run: Path):
    """`snakemake figures` after a finished run plans only the figure that is missing."""
    figure = tiny_run / "results" / FIGURES[2]
    figure.unlink()
    dry = snakemake(tiny_run, "-n", "figures")
    out = dry.stdout + dry.stderr
    assert "rule dice_vs_ratio:" in out
    for rule in (
        "train",
        "share_every_case_run",
        "infer",
        "metrics",
        "table",
        "qualitative",
        "training_curves",
        "dice_per_class",
    ):
        assert f"rule {rule}:" not in out
    snakemake(tiny_run, "--cores", "1", "figures")
    with Image.open(figure) as image:
        image.verify()


def test_a_second_run_has_nothing_to_do(tiny_run: Path):
    dry = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_a_changed_report_setting_replans_the_report_with_short_reasons(tiny_run: Path):
    """The settings the sidecars record reach the report jobs as a file whose job has each
    setting as a parameter: a change re-runs them all, and the reasons stay one line each
    (tests/report/test_report_reasons.py: the report_config job's names the changed setting)."""
    (tiny_run / "no_published.yaml").write_text("published_results: null\n")
    dry = snakemake(tiny_run, "-n", configfiles=("config.yaml", "no_published.yaml"))
    out = dry.stdout + dry.stderr
    for rule in ("report_config", *REPORT_RULES):
        assert f"rule {rule}:" in out
    for rule in ("train", "infer", "metrics"):
        assert f"rule {rule}:" not in out
    reasons = [line for line in out.splitlines() if line.strip().startswith("reason:")]
    # and the `all` job, and the copies kept for the new configuration: its tables and 4 figures
    assert len(reasons) == len(REPORT_RULES) + 2 + 1 + 4
    assert max(len(line) for line in reasons) < 2000 and "method_settings" not in out
    # the plan names each job's files (the kept copies' too), not the whole configuration
    assert "Params have changed" in out and len(out) < 24_000
