"""The report stage: every run's per-case metrics into the results table and figure."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from micd.data.classes import classes_for
from micd.report.figures import plot_dice_per_class
from micd.report.tables import results_table, write_table


def build_report(
    metrics_csvs: Sequence[Path],
    family: str,
    method_order: Sequence[str],
    table_md: Path,
    table_csv: Path,
    figure: Path,
    caption: str = "",
) -> pd.DataFrame:
    per_case = pd.concat([pd.read_csv(path) for path in metrics_csvs], ignore_index=True)
    classes = classes_for(family)
    table = results_table(per_case, classes, method_order=list(method_order))
    write_table(table, table_md, table_csv, caption=caption)
    plot_dice_per_class(per_case, classes, figure, method_order=list(method_order))
    return table
