"""Figures of the results: per-class Dice, Dice against labelled ratio, training curves, a qualitative
comparison of segmentations, and MICD's mask sensitivity."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from micd.atomic import atomic_write  # noqa: E402
from micd.data.classes import OrganClass  # noqa: E402
from micd.methods import display_name  # noqa: E402
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
    cases["method"] = cases["method"].map(display_name)  # the names the tables use
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
    names = {c.short: c.name for c in classes}
    key = ", ".join(f"{short}: {names[short]}" for short in class_order)
    grid.figure.text(0.5, -0.01, textwrap.fill(key, 160), ha="center", va="top", fontsize="small")
    save_png(grid.figure, out_png)


def save_png(figure: plt.Figure, out_png: Path, tight: bool = True) -> None:
    """Save and close ``figure`` as PNG, atomically; cropped to its content if ``tight``, else
    exactly its size (:func:`pixels`)."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    finally:
        plt.close(figure)
    atomic_write(out_png, buffer.getvalue())


def plot_mask_sensitivity(per_case: pd.DataFrame, grid: dict[str, dict], out_csv: Path, out_png: Path) -> pd.DataFrame:
    """Mean Dice of MICD over the mask grid: one heat map (mask ratio x block size) per labelled ratio.

    ``grid`` maps each variant (the ``method`` column) to its ``mask_ratio`` and ``mask_block``.
    Each cell is the protocol's mean foreground Dice, averaged over seeds; the CSV holds the
    same numbers in long form. Cells of ``grid`` without runs (not trained yet) are drawn blank.
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
    mask_ratios = sorted({settings["mask_ratio"] for settings in grid.values()})
    mask_blocks = sorted({settings["mask_block"] for settings in grid.values()})
    figure, axes = plt.subplots(1, len(ratios), figsize=(4.2 * len(ratios), 3.6), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        table = cells[cells["ratio"] == ratio].pivot(index="mask_ratio", columns="mask_block", values="mean_dice")
        table = table.reindex(index=mask_ratios, columns=mask_blocks)
        sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "mean Dice (%)"})
        ax.set_title(f"{format_ratio(ratio)} labelled")
        ax.set_xlabel("mask block (voxels)")
        ax.set_ylabel("mask ratio")
    figure.suptitle("MICD: sensitivity to the block mask", y=1.02)
    save_png(figure, out_png)
    return cells


def pixels(size_inches: tuple[float, float]) -> tuple[int, int]:
    """(width, height) in pixels of a figure of ``size_inches`` saved with ``tight=False``
    (matplotlib truncates the fractional pixel)."""
    return int(size_inches[0] * DPI), int(size_inches[1] * DPI)


DICE_VS_RATIO_SIZE = (7.0, 4.0)  # inches


def plot_dice_vs_ratio(per_case: pd.DataFrame, out_png: Path, method_order: Sequence[str] | None = None) -> None:
    """Mean Dice against the labelled ratio, one line per method, error bars the std over seeds.

    Each point is the mean over seeds of each run's protocol mean Dice (as in the tables, std
    with ddof=0); a single seed has no error bar.
    """
    from micd.evaluation.metrics import summarise

    runs = summarise(per_case)
    points = runs.groupby(["dataset", "ratio", "method"], as_index=False)["mean_dice"].agg(
        mean="mean", std=lambda s: s.std(ddof=0)
    )
    points = order_rows(points, method_order, appearance=per_case)
    figure, ax = plt.subplots(figsize=DICE_VS_RATIO_SIZE, layout="constrained")
    for method, line in points.groupby("method", sort=False):
        ax.errorbar(line["ratio"], line["mean"], yerr=line["std"], marker="o", capsize=3, label=display_name(method))
    ax.set_xticks(sorted(points["ratio"].unique()))
    ax.set_xlabel("labelled training cases (%)")
    seeds = runs.groupby(["ratio", "method"])["seed"].nunique().max()
    ax.set_ylabel("mean Dice (%), error bars: SD over seeds" if seeds > 1 else "mean Dice (%), one seed")
    # the data's own range (with room), so that small differences stay visible
    low, high = (points["mean"] - points["std"]).min(), (points["mean"] + points["std"]).max()
    margin = max(2.0, 0.1 * (high - low))
    ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin))
    ax.grid(alpha=0.3)
    figure.legend(title="Method", loc="outside right upper", fontsize="small")
    ax.set_title(f"Dice against labelled ratio, {points['dataset'].iloc[0]}", fontsize="medium")
    save_png(figure, out_png, tight=False)


BOOKKEEPING_COLUMNS = ("epoch", "iteration", "lr", "beta", "data_s", "compute_s")
"""Columns of ``train_log.jsonl`` that are not loss terms (``beta``: the consistency weight)."""

CURVE_PANEL = (4.2, 2.6)  # inches per panel
PLAIN_NUMBER = FuncFormatter(lambda value, _: f"{value:g}")
CURVE_LEGEND = 1.2  # inches for the title above and the legend and its note below the panels


def training_curves_size(n_methods: int, n_ratios: int) -> tuple[float, float]:
    return CURVE_PANEL[0] * n_ratios, CURVE_PANEL[1] * n_methods + CURVE_LEGEND


def smooth(values: pd.Series) -> pd.Series:
    """Running mean over 5 % of the iterations: per-iteration losses of one batch are noisy."""
    return values.rolling(max(1, len(values) // 20), min_periods=1).mean()


TOTAL = "loss"  # the total a step back-propagates, drawn over its terms


def _plot_losses(ax: plt.Axes, losses: pd.DataFrame, colours: Mapping[str, tuple]) -> None:
    """Each loss term of one panel, smoothed, on a log scale with ticks at 1, 2 and 5 of each
    decade; the total dotted on top, so that a term it equals (``sup`` early on) stays visible."""
    for term, curve in losses.groupby("term", sort=False):
        total = term == TOTAL
        ax.plot(
            curve["iteration"],
            smooth(curve["value"]),
            color=colours[term],
            linewidth=1.8 if total else 1,
            linestyle=":" if total else "-",
            zorder=3 if total else 2,
        )
    ax.set_yscale("log", nonpositive="mask")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(PLAIN_NUMBER)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")


def _plot_validation(ax: plt.Axes, validation: pd.DataFrame) -> None:
    """The validation Dice of one panel, dashed, on a right-hand axis from 0 to 100."""
    twin = ax.twinx()
    twin.plot(validation["iteration"], validation["eval_mean_dice"], "k--o", markersize=3, linewidth=1)
    twin.set_ylim(0, 100)
    twin.set_ylabel("validation Dice (%)")


def plot_training_curves(
    losses: pd.DataFrame,
    validation: pd.DataFrame,
    out_png: Path,
    method_order: Sequence[str] | None = None,
) -> None:
    """Every loss term and the validation Dice against the iteration: one panel per method and ratio.

    ``losses`` is the long frame ``ratio, method, seed, iteration, term, value`` of the runs'
    ``train_log.jsonl``; ``validation`` is ``ratio, method, seed, iteration, eval_mean_dice`` of
    their ``validation.csv``. Losses (log scale, left axis) are averaged over seeds and smoothed
    (:func:`smooth`); the validation Dice (right axis) is averaged over seeds. Rows are methods in
    ``method_order``, columns labelled ratios; a term has the same colour in every panel.
    """
    methods = list(
        order_rows(losses[["dataset", "ratio", "method"]].drop_duplicates(), method_order)["method"].unique()
    )
    ratios = sorted(losses["ratio"].unique())
    terms = [t for t in dict.fromkeys(losses["term"]) if t != TOTAL]
    colours = dict(zip(terms, sns.color_palette("tab10", len(terms)))) | {TOTAL: (0.0, 0.0, 0.0)}
    mean_loss = losses.groupby(["method", "ratio", "term", "iteration"], as_index=False)["value"].mean()
    mean_dice = validation.groupby(["method", "ratio", "iteration"], as_index=False)["eval_mean_dice"].mean()

    figure, axes = plt.subplots(
        len(methods),
        len(ratios),
        figsize=training_curves_size(len(methods), len(ratios)),
        squeeze=False,
        layout="constrained",
    )
    for row, method in enumerate(methods):
        for column, ratio in enumerate(ratios):
            ax = axes[row][column]
            _plot_losses(ax, mean_loss[(mean_loss["method"] == method) & (mean_loss["ratio"] == ratio)], colours)
            _plot_validation(ax, mean_dice[(mean_dice["method"] == method) & (mean_dice["ratio"] == ratio)])
            ax.set_title(f"{display_name(method)}, {format_ratio(ratio)} labelled", fontsize="medium")
    handles = [plt.Line2D([], [], color=colours[t], label=t) for t in terms]
    handles.append(plt.Line2D([], [], color="k", linestyle=":", linewidth=1.8, label="total loss"))
    handles.append(plt.Line2D([], [], color="k", linestyle="--", marker="o", markersize=3, label="validation Dice"))
    note = (
        "Loss terms: log scale, running mean over 5 % of the iterations, mean over seeds. sup of a two-network "
        "method is the sum of both networks' supervised losses, each with its class weights (DHC's reach the "
        "number of classes), so it is larger than a one-network method's."
    )
    width = figure.get_size_inches()[0]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 8),
        fontsize="small",
        title=textwrap.fill(note, int(width * 16)),
        title_fontsize="x-small",
    )
    figure.suptitle(f"Training curves, {losses['dataset'].iloc[0]}")
    save_png(figure, out_png, tight=False)


QUALITATIVE_PANEL = 2.2  # inches per panel side
LEGEND_ENTRY = (1.5, 0.22)  # inches per organ name in the legend below the panels


def _legend_columns(width: float, n_entries: int) -> int:
    return max(1, min(n_entries, int(width // LEGEND_ENTRY[0])))


def qualitative_size(n_rows: int, n_columns: int, n_classes: int) -> tuple[float, float]:
    """Figure size (inches) for ``n_rows`` x ``n_columns`` panels and a legend of ``n_classes`` organs."""
    width = QUALITATIVE_PANEL * n_columns
    legend_rows = -(-n_classes // _legend_columns(width, n_classes))
    return width, QUALITATIVE_PANEL * n_rows + LEGEND_ENTRY[1] * legend_rows + 0.3


def class_colours(classes: Sequence[OrganClass]) -> dict[int, tuple[float, float, float]]:
    """A fixed colour per foreground class id: tab20's ten dark hues, then their light ones, with
    gold for tab20's grey (label 8: the aorta, whose bright contrast would swallow grey)."""
    tab20 = [tuple(c) for c in plt.get_cmap("tab20").colors]
    greys = {tab20[14], tab20[15]}
    palette = [GOLD if c in greys else c for c in (*tab20[0::2], *tab20[1::2])]
    return {c.label: palette[(c.label - 1) % len(palette)] for c in classes if c.label != 0}


GOLD = (1.0, 0.84, 0.0)


def radiological(slice_yx: np.ndarray) -> np.ndarray:
    """An axial slice of a RAS-ordered (D, H, W) volume as radiologists view it: the patient's
    right on the image's left, anterior up (both axes reversed)."""
    return slice_yx[::-1, ::-1]


def _orientation_letters(ax: plt.Axes) -> None:
    for x, y, letter in ((0.02, 0.5, "R"), (0.98, 0.5, "L"), (0.5, 0.98, "A"), (0.5, 0.02, "P")):
        ax.text(
            x,
            y,
            letter,
            transform=ax.transAxes,
            color="yellow",
            fontsize="x-small",
            fontweight="bold",
            ha="center",
            va="center",
        )


def slice_with_most_foreground(truth: np.ndarray) -> int:
    """The axial slice (first axis of a (D, H, W) label map) with the most foreground voxels."""
    return int(np.argmax((truth > 0).reshape(truth.shape[0], -1).sum(axis=1)))


def _overlay(labels: np.ndarray, colours: Mapping[int, tuple[float, float, float]], alpha: float) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4))
    for label, colour in colours.items():
        rgba[labels == label] = (*colour, alpha)
    return rgba


def plot_qualitative(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[tuple[int, str], np.ndarray],
    classes: Sequence[OrganClass],
    out_png: Path,
    title: str,
) -> int:
    """The same axial slice of the image, the ground truth and each method's prediction.

    ``image`` (in [0, 1]), ``truth`` and each prediction are (D, H, W) arrays of one case; the
    slice is the one with the most foreground in the truth (:func:`slice_with_most_foreground`).
    ``predictions`` maps (ratio, method) to a label map: one row per ratio, one column per
    method, in the mapping's order; image and truth head the first row. Organs keep their
    colour (:func:`class_colours`) in every panel; the legend names them. Returns the slice.
    """
    depth = slice_with_most_foreground(truth)
    colours = class_colours(classes)
    ratios = list(dict.fromkeys(r for r, _ in predictions))
    per_ratio = {ratio: [m for r, m in predictions if r == ratio] for ratio in ratios}
    columns = 2 + max(len(methods) for methods in per_ratio.values())
    foreground = [c for c in classes if c.label != 0]
    size = qualitative_size(len(ratios), columns, len(foreground))
    figure, axes = plt.subplots(len(ratios), columns, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    panels = {(0, 0): ("image", None), (0, 1): ("ground truth", truth)}
    for row, ratio in enumerate(ratios):  # each ratio's methods side by side, no gaps
        for column, method in enumerate(per_ratio[ratio], start=2):
            panels[(row, column)] = (f"{display_name(method)}, {format_ratio(ratio)}", predictions[(ratio, method)])
    for (row, column), (name, labels) in panels.items():
        ax = axes[row][column]
        ax.imshow(radiological(image[depth]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            ax.imshow(_overlay(radiological(labels[depth]), colours, alpha=0.6), interpolation="nearest")
        _orientation_letters(ax)
        ax.set_title(name, fontsize="small")
    handles = [Patch(color=colours[c.label], label=c.name) for c in foreground]
    ncol = _legend_columns(size[0], len(handles))
    figure.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize="x-small")
    figure.suptitle(f"{title}, axial slice {depth} (radiological view: patient's right on the left)")
    save_png(figure, out_png, tight=False)
    return depth
