"""Per-case, per-class scores of one run's predictions, as a long CSV (``metrics.csv``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from micd.atomic import atomic_write
from micd.data.classes import OrganClass
from micd.data.io import load_nifti
from micd.data.loaders import case_paths
from micd.data.predictions import from_volume, prediction_path
from micd.data.preprocess import case_rows, check_num_classes
from micd.errors import case_error
from micd.evaluation.measures import DHC_EMPTY_ASD, METRICS_CSV_COLUMNS, score_case


def grid_spacing(case_row: Mapping[str, str]) -> tuple[float, float, float]:
    """Voxel size (D, H, W, mm) of a case's preprocessed grid, from ``cases.csv``'s ``axbxc``."""
    text = case_row.get("grid_spacing") or ""
    try:
        spacing = tuple(float(s) for s in text.split("x"))
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or min(spacing) <= 0:
        raise case_error(case_row.get("case_id"), None, f"expected a grid_spacing 'DxHxW' in cases.csv, got {text!r}")
    return spacing  # type: ignore[return-value]


def check_labels(case_id: str, path: Path, labels: np.ndarray, classes: Sequence[OrganClass]) -> None:
    """Label values outside the family's classes would be scored under other organs' names."""
    outside = np.unique(labels[labels >= len(classes)]) if labels.size else np.array([])
    if outside.size:
        raise case_error(
            case_id,
            path,
            f"expected labels 0..{len(classes) - 1} (the family's {len(classes)} classes), found "
            f"{outside[:10].tolist()}: is --family the data set's?",
        )


def score_run(
    prediction_dir: Path,
    data_dir: Path,
    case_ids: Sequence[str],
    classes: Sequence[OrganClass],
    run: dict[str, Any],
    out_csv: Path,
    *,
    both_empty_dice: float = 100.0,
    empty_asd: float = DHC_EMPTY_ASD,
) -> pd.DataFrame:
    """Score each case's prediction against its preprocessed label on the preprocessed grid,
    with that grid's spacing for the mm metrics; one row per case and foreground class."""
    short = {c.label: c.short for c in classes}
    check_num_classes(data_dir, len(classes), "the family's class list")
    rows = case_rows(data_dir, list(case_ids))
    table_rows = []
    for case_id in case_ids:
        path = prediction_path(prediction_dir, case_id)
        prediction = from_volume(load_nifti(path, case_id))
        truth_path = case_paths(data_dir, case_id)[1]
        truth = np.load(truth_path)
        check_labels(case_id, truth_path, truth, classes)
        check_labels(case_id, path, prediction, classes)
        if prediction.shape != truth.shape:
            raise case_error(case_id, path, f"expected a prediction of shape {truth.shape}, got {prediction.shape}")
        spacing = grid_spacing(rows[case_id])
        scores = score_case(
            prediction, truth, len(classes), spacing, both_empty_dice=both_empty_dice, empty_asd=empty_asd
        )
        for class_scores in scores:
            table_rows.append(
                {**run, "case_id": case_id, "class_short": short[class_scores["class_id"]], **class_scores}
            )
    table = pd.DataFrame(table_rows, columns=list(METRICS_CSV_COLUMNS))
    atomic_write(out_csv, table.to_csv(index=False))
    return table
