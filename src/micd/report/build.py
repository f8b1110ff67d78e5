"""The report stage: read the runs' outputs, write each table or figure and its provenance sidecar.

Each ``build_*`` function is one ``micd`` subcommand. ``config`` is the workflow configuration the
rule passes for the sidecar; ``runs`` are records naming one run (``dataset, ratio, method,
seed``) with the paths of its files, as the rule lists them. ``figures`` are the files of one
figure, one per format, each named by its extension (``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micd.data.classes import classes_for
from micd.evaluation.measures import RUN_KEYS
from micd.methods import display_name
from micd.report.captions import TableFacts, main_caption, organ_caption, published_sources
from micd.report.figures import (
    plot_dice_per_class,
    plot_dice_vs_ratio,
    plot_mask_sensitivity,
    plot_qualitative,
    plot_training_curves,
)
from micd.report.published import file_records, read_published
from micd.report.sidecar import write_provenance
from micd.report.table_formats import Captions, TablePaths, write_tables
from micd.report.tables import class_columns, main_rows, published_table, results_table, shows_p, with_published

Config = Mapping[str, Any]
RunFiles = Sequence[Mapping[str, Any]]
Figures = Sequence[Path]


def read_per_case(metrics_csvs: Sequence[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(path) for path in metrics_csvs], ignore_index=True)


def build_tables(
    metrics_csvs: Sequence[Path],
    family: str,
    method_order: Sequence[str],
    paths: TablePaths,
    config: Config,
    published_csvs: Sequence[Path] = (),
    main_published_methods: Sequence[str] | None = None,
    subject: str = "",
    note: str = "",
) -> pd.DataFrame:
    """The results (or ablation) tables of one data set, the main one and the per-organ one, in every
    format, with the published rows of its family beside ours from each of ``published_csvs``
    (:mod:`micd.report.published`; the first file's rows take the first mark). The per-organ table and
    the CSV hold every published row, the main table those of ``main_published_methods`` (every one
    where None). ``subject`` names a table that is not the main results (``ablation``) in its captions,
    and ``note`` ends them (the workflow's: where the labelled splits come from). Returns the table
    with every row."""
    per_case = read_per_case(metrics_csvs)
    classes = classes_for(family)
    dataset = per_case["dataset"].iloc[0]
    ratios = sorted(per_case["ratio"].unique())
    table = results_table(per_case, classes, method_order=method_order)
    extra = {}
    if published_csvs:
        published = published_table(read_published(published_csvs), family, dataset, ratios, classes)
        table = with_published(table, published)
        extra["published_files"] = file_records(published_csvs)
    main = main_rows(table, main_published_methods)
    facts = TableFacts(
        dataset=dataset,
        family=family,
        ratios=ratios,
        seeds=sorted(per_case["seed"].unique()),
        n_cases=per_case["case_id"].nunique(),
        has_p=shows_p(table),
        published=published_sources(table),
        main_published=published_sources(main),
        main_methods=None if main_published_methods is None else [display_name(m) for m in main_published_methods],
        subject=subject,
        note=note,
    )
    captions = Captions(main_caption(facts), organ_caption(facts, classes, class_columns(table)))
    write_tables(table, paths, captions, label="tab:" + paths.latex.stem.replace("_", "-"), main=main)
    write_provenance(paths.all(), config, per_case, **extra)
    return table


def build_dice_per_class(
    metrics_csvs: Sequence[Path], family: str, method_order: Sequence[str], figures: Figures, config: Config
) -> None:
    per_case = read_per_case(metrics_csvs)
    plot_dice_per_class(per_case, classes_for(family), figures, method_order=method_order)
    write_provenance(figures, config, per_case)


def build_dice_vs_ratio(
    metrics_csvs: Sequence[Path], method_order: Sequence[str], figures: Figures, config: Config
) -> None:
    per_case = read_per_case(metrics_csvs)
    plot_dice_vs_ratio(per_case, figures, method_order=method_order)
    write_provenance(figures, config, per_case)


def build_mask_sensitivity(
    metrics_csvs: Sequence[Path], grid: dict[str, dict], out_csv: Path, figures: Figures, config: Config
) -> None:
    per_case = read_per_case(metrics_csvs)
    plot_mask_sensitivity(per_case, grid, out_csv, figures)
    write_provenance([out_csv, *figures], config, per_case, mask_grid=grid)


def _run_keys(run: Mapping[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in RUN_KEYS}


# What a train_log.jsonl line held beside its loss terms before they were nested under "losses":
# a run trained then, or resumed since from such a checkpoint, still has lines of that form.
FLAT_LOG_BOOKKEEPING = frozenset({"epoch", "iteration", "lr", "beta", "data_s", "compute_s", "skipped"})


def logged_losses(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The loss terms of one train_log.jsonl line, of either form."""
    if "losses" in row:
        return row["losses"]
    return {key: value for key, value in row.items() if key not in FLAT_LOG_BOOKKEEPING}


def read_training(runs: RunFiles) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long loss terms (a log line's ``losses``; a skipped step's are null and left out) and
    validation Dice of runs with ``train_log`` and ``validation`` paths."""
    losses, validation = [], []
    for run in runs:
        with open(run["train_log"]) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        long = pd.DataFrame(
            [
                {"iteration": row["iteration"], "term": term, "value": value}
                for row in rows
                for term, value in logged_losses(row).items()
                if value is not None
            ],
            columns=["iteration", "term", "value"],
        )
        losses.append(long.assign(**_run_keys(run)))
        validation.append(pd.read_csv(run["validation"]).assign(**_run_keys(run)))
    return pd.concat(losses, ignore_index=True), pd.concat(validation, ignore_index=True)


def build_training_curves(runs: RunFiles, method_order: Sequence[str], figures: Figures, config: Config) -> None:
    losses, validation = read_training(runs)
    plot_training_curves(losses, validation, figures, method_order=method_order)
    write_provenance(figures, config, pd.DataFrame(runs))


def choose_case(cases_file: Path, case_id: str | None) -> str:
    """``case_id`` if given (it must be a test case), else the first test case by id."""
    from micd.data.io import read_case_list

    cases = sorted(read_case_list(cases_file))
    if case_id is None:
        return cases[0]
    if case_id not in cases:
        raise ValueError(f"case {case_id!r} is not among the test cases of {cases_file}")
    return case_id


def build_qualitative(
    runs: RunFiles,
    data_dir: Path,
    cases_file: Path,
    family: str,
    figures: Figures,
    config: Config,
    case_id: str | None = None,
) -> int:
    """The qualitative comparison of one test case (see :func:`choose_case`) across the runs,
    which have a ``predictions`` folder; one run per (ratio, method), e.g. all of seed 0."""
    from micd.data.io import load_nifti
    from micd.data.loaders import case_paths
    from micd.data.predictions import from_volume, prediction_path

    case_id = choose_case(cases_file, case_id)
    image_path, label_path = case_paths(data_dir, case_id)
    predictions = {
        (run["ratio"], run["method"]): from_volume(load_nifti(prediction_path(run["predictions"], case_id), case_id))
        for run in runs
    }
    seeds = sorted({run["seed"] for run in runs})
    dataset = runs[0]["dataset"]
    if family == "synthetic":  # its cases carry AMOS-like ids: say that it is no patient
        phantom = "synthetic phantom (not a patient)"
        dataset = phantom.capitalize() if dataset == "synthetic" else f"{dataset}, a {phantom}"
    title = f"{dataset}, test case {case_id}, seed {', '.join(map(str, seeds))}"
    depth = plot_qualitative(
        np.load(image_path), np.load(label_path), predictions, classes_for(family), figures, title=title
    )
    write_provenance(figures, config, pd.DataFrame(runs), case_id=case_id, axial_slice=depth)
    return depth
