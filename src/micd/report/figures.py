"""Figures of the results: per-class Dice bar plots."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from micd.atomic import atomic_write  # noqa: E402
from micd.data.classes import OrganClass  # noqa: E402
from micd.report.tables import format_ratio, order_rows  # noqa: E402

DPI = 120
PANEL_HEIGHT = 3.2  # inches


def _panel_width(n_classes: int, n_methods: int) -> float:
    """Panel width in inches: room for each bar, within what a page or screen shows."""
    return min(16.0, max(8.0, 2.0 + 0.3 * n_classes * n_methods))


def plot_dice_per_class(
    per_case: pd.DataFrame,
    classes: Sequence[OrganClass],
    out_png: Path,
    method_order: Sequence[str] | None = None,
) -> None:
    """Bar plot of mean Dice per organ class, one panel per labelled ratio, as PNG.

    ``per_case`` is the long per-case per-class table (``dataset, ratio, method, seed,
    case_id, class_id, dice``; one dataset). Bars are means over cases of each case's
    Dice averaged over seeds; error bars are the standard deviation over cases. Classes
    are shown by short name in label order, methods (hue) in ``method_order`` then as
    they come. Saved atomically at :data:`DPI` dots per inch.
    """
    datasets = per_case["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"expected the cases of one dataset, got {list(datasets)}")
    short_by_label = {c.label: c.short for c in classes if c.label != 0}
    unknown = sorted(set(per_case["class_id"]) - set(short_by_label) - {0})
    if unknown:
        raise ValueError(f"class ids {unknown} are not among the given classes")

    foreground = per_case[per_case["class_id"] != 0]
    cases = (
        foreground.groupby(
            ["dataset", "ratio", "method", "case_id", "class_id"],
            sort=False,
            as_index=False,
        )["dice"]
        .mean()
        .pipe(order_rows, method_order)
    )
    cases["class"] = cases["class_id"].map(short_by_label)
    cases["panel"] = cases["ratio"].map(lambda r: f"{format_ratio(r)} labelled")
    scored = set(cases["class_id"])
    class_order = [short for label, short in short_by_label.items() if label in scored]

    grid = sns.catplot(
        data=cases,
        kind="bar",
        x="class",
        y="dice",
        hue="method",
        col="panel",
        col_wrap=1,
        order=class_order,
        hue_order=list(cases["method"].unique()),
        col_order=list(cases["panel"].unique()),
        errorbar="sd",
        capsize=0.1,
        err_kws={"linewidth": 1},
        height=PANEL_HEIGHT,
        aspect=_panel_width(len(class_order), cases["method"].nunique()) / PANEL_HEIGHT,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("Organ class", "Dice (%)")
    grid.set(ylim=(0, 100))
    if grid.legend is not None:
        grid.legend.set_title("Method")
    # y > 1 clears the first panel's title; bbox_inches="tight" keeps it in the image.
    grid.figure.suptitle(f"Dice per organ class, {datasets[0]} (mean over cases, error bars: SD)", y=1.02)

    save_png(grid.figure, out_png)


def save_png(figure: plt.Figure, out_png: Path) -> None:
    """Save and close ``figure`` as PNG, atomically."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write(out_png, buffer.getvalue())


def plot_mask_sensitivity(per_case: pd.DataFrame, grid: dict[str, dict], out_csv: Path, out_png: Path) -> pd.DataFrame:
    """Mean Dice of MICD over the mask grid: one heat map (mask ratio x block size) per labelled ratio.

    ``grid`` maps each variant (the ``method`` column) to its ``mask_ratio`` and ``mask_block``.
    Each cell is the protocol's mean foreground Dice, averaged over seeds; the CSV holds the
    same numbers in long form.
    """
    from micd.evaluation.metrics import summarise

    runs = summarise(per_case)
    runs = runs[runs["method"].isin(list(grid))]
    runs = runs.assign(
        mask_ratio=runs["method"].map(lambda m: grid[m]["mask_ratio"]),
        mask_block=runs["method"].map(lambda m: grid[m]["mask_block"]),
    )
    cells = runs.groupby(["ratio", "mask_ratio", "mask_block"], as_index=False)["mean_dice"].agg(["mean", "std"])
    cells = cells.rename(columns={"mean": "mean_dice", "std": "std_over_seeds"})
    atomic_write(out_csv, cells.to_csv(index=False))
    ratios = sorted(cells["ratio"].unique())
    figure, axes = plt.subplots(1, len(ratios), figsize=(4.2 * len(ratios), 3.6), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        table = cells[cells["ratio"] == ratio].pivot(index="mask_ratio", columns="mask_block", values="mean_dice")
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "mean Dice (%)"})
        ax.set_title(f"{format_ratio(ratio)} labelled")
        ax.set_xlabel("mask block (voxels)")
        ax.set_ylabel("mask ratio")
    figure.suptitle("MICD: sensitivity to the block mask", y=1.02)
    save_png(figure, out_png)
    return cells
