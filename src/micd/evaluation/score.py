"""Per-case, per-class scores of one run's predictions, as a long CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from micd.atomic import atomic_write
from micd.data.classes import OrganClass
from micd.data.errors import case_error
from micd.data.io import load_nifti
from micd.data.loaders import case_paths
from micd.evaluation.metrics import PER_CASE_COLUMNS, score_case
from micd.evaluation.predict import from_volume, prediction_path


def score_run(
    prediction_dir: Path,
    data_dir: Path,
    case_ids: Sequence[str],
    classes: Sequence[OrganClass],
    run: dict[str, Any],
    out_csv: Path,
) -> pd.DataFrame:
    """Score each case's prediction against its preprocessed label; one row per case and class."""
    short = {c.label: c.short for c in classes}
    rows = []
    for case_id in case_ids:
        path = prediction_path(prediction_dir, case_id)
        prediction = from_volume(load_nifti(path, case_id))
        truth = np.load(case_paths(data_dir, case_id)[1])
        if prediction.shape != truth.shape:
            raise case_error(case_id, path, f"expected a prediction of shape {truth.shape}, got {prediction.shape}")
        for scores in score_case(prediction, truth, len(classes)):
            rows.append({**run, "case_id": case_id, "class_short": short[scores["class_id"]], **scores})
    table = pd.DataFrame(rows, columns=list(PER_CASE_COLUMNS))
    atomic_write(out_csv, table.to_csv(index=False))
    return table
