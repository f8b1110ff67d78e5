"""Results tables, one row per (dataset, labelled ratio, method): Markdown and CSV."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from micd.atomic import atomic_write
from micd.data.classes import OrganClass
from micd.evaluation.metrics import class_means, summarise

TABLE_KEYS: list[str] = ["dataset", "ratio", "method"]
SUMMARY_COLUMNS: list[str] = [
    *TABLE_KEYS,
    "n_seeds",
    "dice_mean",
    "dice_std",
    "asd_mean",
    "asd_std",
]
"""Leading columns of :func:`results_table`; the per-class Dice columns follow."""

_MISSING = "–"


def format_ratio(ratio: object) -> str:
    """A labelled ratio (percent) as tables and figures show it: ``10`` → ``10 %``."""
    if isinstance(ratio, numbers.Real) and not isinstance(ratio, bool):
        return f"{ratio:g} %"
    return str(ratio)


def order_rows(
    frame: pd.DataFrame,
    method_order: Sequence[str] | None = None,
    appearance: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Sort by dataset, ratio, then ``method_order``.

    Datasets, and methods missing from ``method_order``, come in their order of first
    appearance in ``appearance`` (default: ``frame`` itself).
    """
    appearance = frame if appearance is None else appearance
    methods = list(dict.fromkeys([*(method_order or ()), *appearance["method"]]))
    datasets = list(dict.fromkeys(appearance["dataset"]))
    rank = frame.assign(
        _dataset=frame["dataset"].map(datasets.index),
        _method=frame["method"].map(methods.index),
    )
    return rank.sort_values(["_dataset", "ratio", "_method"], kind="stable").drop(columns=["_dataset", "_method"])


def results_table(
    per_case: pd.DataFrame,
    classes: Sequence[OrganClass],
    method_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (dataset, ratio, method) of a long per-case per-class table.

    Input columns: those of :func:`micd.evaluation.metrics.class_means`. Output columns:
    :data:`SUMMARY_COLUMNS` (``n_seeds``; mean and std over seeds of each seed's
    protocol mean Dice and ASD in voxels, std with ddof=0 as DHC's ``np.std``), then one
    mean-Dice column per foreground class of ``classes``, named by its short name, in
    label order (NaN where never scored). Rows are ordered by dataset, ratio, then
    ``method_order`` (see :func:`order_rows`).
    """
    foreground = [c for c in classes if c.label != 0]
    short_by_label = {c.label: c.short for c in foreground}
    per_class = class_means(per_case)
    unknown = sorted(set(per_class["class_id"]) - set(short_by_label))
    if unknown:
        raise ValueError(f"class ids {unknown} are not among the given classes")

    runs = summarise(per_case)
    table = (
        runs.groupby(TABLE_KEYS, sort=False)
        .agg(
            n_seeds=("seed", "nunique"),
            dice_mean=("mean_dice", "mean"),
            dice_std=("mean_dice", lambda s: s.std(ddof=0)),
            asd_mean=("mean_asd", "mean"),
            asd_std=("mean_asd", lambda s: s.std(ddof=0)),
        )
        .reset_index()
    )
    class_dice = (
        per_class.groupby([*TABLE_KEYS, "class_id"], sort=False)["dice"]
        .mean()
        .unstack("class_id")
        .reindex(columns=list(short_by_label))
        .rename(columns=short_by_label)
        .reset_index()
    )
    class_dice.columns.name = None
    table = table.merge(class_dice, on=TABLE_KEYS, how="left", validate="one_to_one")
    return order_rows(table, method_order, appearance=per_case).reset_index(drop=True)


def _mean_std(mean: float, std: float, n_seeds: int) -> str:
    return f"{mean:.1f} ± {std:.1f}" if n_seeds > 1 else f"{mean:.1f}"


def _shown(value: float) -> float:
    """The value as the table shows it, so that ties in print are ties in bolding."""
    return float(f"{value:.1f}")


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    """Markdown text of a :func:`results_table`: caption, blank line, then the table.

    Mean Dice and ASD read ``mean ± std`` over seeds (just the mean for one seed); bold
    marks the best mean Dice and the lowest mean ASD within each (dataset, ratio),
    judged on the values as printed.
    """
    class_columns = [c for c in table.columns if c not in SUMMARY_COLUMNS]
    groups = table.groupby(["dataset", "ratio"], sort=False)
    best_dice = groups["dice_mean"].transform(lambda s: s.map(_shown).max())
    best_asd = groups["asd_mean"].transform(lambda s: s.map(_shown).min())

    header = [
        "Dataset",
        "Labelled",
        "Method",
        "Seeds",
        "Dice (%) ↑",
        "ASD (voxels) ↓",
        *class_columns,
    ]
    align = ["---"] * 3 + ["---:"] * (len(header) - 3)
    lines = [caption, "", _row(header), _row(align)]
    for index, row in table.iterrows():
        dice = _mean_std(row["dice_mean"], row["dice_std"], row["n_seeds"])
        asd = _mean_std(row["asd_mean"], row["asd_std"], row["n_seeds"])
        if _shown(row["dice_mean"]) == best_dice[index]:
            dice = f"**{dice}**"
        if _shown(row["asd_mean"]) == best_asd[index]:
            asd = f"**{asd}**"
        per_class = [_MISSING if math.isnan(row[c]) else f"{row[c]:.1f}" for c in class_columns]
        cells = [
            row["dataset"],
            format_ratio(row["ratio"]),
            row["method"],
            str(row["n_seeds"]),
            dice,
            asd,
        ]
        lines.append(_row([*cells, *per_class]))
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_table(table: pd.DataFrame, markdown_path: Path | str, csv_path: Path | str, caption: str) -> None:
    """Write a :func:`results_table` as Markdown (:func:`to_markdown`) and raw CSV."""
    atomic_write(markdown_path, to_markdown(table, caption))
    atomic_write(csv_path, table.to_csv(index=False))
