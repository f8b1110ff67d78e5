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
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import SubFigure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from micd.atomic import atomic_write  # noqa: E402
from micd.data.classes import OrganClass  # noqa: E402
from micd.methods import display_name  # noqa: E402
from micd.report.tables import format_ratio, order_rows  # noqa: E402

DPI = 300  # of PNG files: print resolution (PDF and SVG are vector)
FORMATS = ("png", "pdf", "svg")
"""Figure file formats, by file extension (config ``figures.formats``)."""
PANEL_HEIGHT = 3.2  # inches
ZERO_ROOM = 0.04
"""Share of a Dice axis below 0, so that a value of 0 is drawn above the bottom spine, not on it."""
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
"""Okabe and Ito's colour-blind-safe hues (with black, the total loss's): the colours of methods
and of loss terms, in this order, repeating after seven."""


def cycled(palette: Sequence[str], n: int) -> list[str]:
    return [palette[i % len(palette)] for i in range(n)]


def _panel_width(n_classes: int, n_methods: int) -> float:
    """Panel width in inches: room for each bar, within what a page or screen shows."""
    return min(16.0, max(8.0, 2.0 + 0.3 * n_classes * n_methods))


def dice_axis(top: float) -> tuple[float, float]:
    """Limits of a Dice (%) axis from 0 to the data's ``top`` (rounded up to a tick, at most 100),
    with :data:`ZERO_ROOM` below 0: a series of zeros lies inside the axes, above the spine."""
    upper = min(100.0, max(5.0, float(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(0, top)[-1])))
    return -ZERO_ROOM * upper, upper


def _mark_low_bars(ax: plt.Axes) -> None:
    """A bar of 0, or too low to see (under 1.5 % of the axis), gets a thick line of its colour at
    its height, so that every method's colour shows (the axis starts below 0: :func:`dice_axis`)."""
    visible = 0.015 * ax.get_ylim()[1]
    for bar in list(ax.patches):
        height = bar.get_height()
        if np.isfinite(height) and abs(height) < visible:
            x = bar.get_x()
            ax.plot(
                [x, x + bar.get_width()], [height] * 2, color=bar.get_facecolor(), linewidth=2.5, solid_capstyle="butt"
            )


def plot_dice_per_class(
    per_case: pd.DataFrame,
    classes: Sequence[OrganClass],
    outputs: Path | Sequence[Path],
    method_order: Sequence[str] | None = None,
) -> None:
    """Bar plot of mean Dice per organ class, one panel per labelled ratio, in each of ``outputs``
    (:func:`save_figure`).

    ``per_case`` is the long per-case per-class table (``dataset, ratio, method, seed,
    case_id, class_id, dice``; one dataset). Bars are means over cases of each case's
    Dice averaged over seeds; error bars are the standard deviation over cases. Classes
    are shown by short name in label order, methods (hue) in ``method_order`` then as
    they come; a bar of 0, or too low to see, is drawn as a line (:func:`_mark_low_bars`).
    """
    save_figure(dice_per_class_figure(per_case, classes, method_order), outputs)


def dice_per_class_figure(
    per_case: pd.DataFrame, classes: Sequence[OrganClass], method_order: Sequence[str] | None = None
) -> plt.Figure:
    """The figure of :func:`plot_dice_per_class`."""
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
        palette=cycled(OKABE_ITO, cases["method"].nunique()),
        col_order=list(cases["panel"].unique()),
        errorbar="sd",
        capsize=0.1,
        err_kws={"linewidth": 1},
        height=PANEL_HEIGHT,
        aspect=_panel_width(len(class_order), cases["method"].nunique()) / PANEL_HEIGHT,
    )
    grid.set_titles("{col_name}")
    grid.set_axis_labels("Organ class", "Dice (%)")
    per_class = cases.groupby(["panel", "method", "class"])["dice"]
    grid.set(ylim=dice_axis((per_class.mean() + per_class.std().fillna(0)).max()))
    for ax in grid.axes.flat:
        _mark_low_bars(ax)
    if grid.legend is not None:
        grid.legend.set_title("Method")
    # y > 1 clears the first panel's title; bbox_inches="tight" keeps it in the image.
    grid.figure.suptitle(f"Dice per organ class, {datasets[0]} (mean over cases, error bars: SD)", y=1.02)
    names = {c.short: c.name for c in classes}
    key = ", ".join(f"{short}: {names[short]}" for short in class_order)
    grid.figure.text(0.5, -0.01, textwrap.fill(key, 160), ha="center", va="top", fontsize="small")
    return grid.figure


NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": None}
"""Metadata that would make each rendering differ; left out so that the same numbers give the same file."""


def save_figure(figure: plt.Figure, outputs: Path | Sequence[Path], tight: bool = True) -> None:
    """Save and close ``figure`` in each of ``outputs``, in the format its extension names
    (:data:`FORMATS`; PNG at :data:`DPI`), each file atomically; cropped to the content if
    ``tight``, else exactly the figure's size (:func:`pixels`)."""
    paths = [Path(outputs)] if isinstance(outputs, str | Path) else [Path(path) for path in outputs]
    rendered = {}
    try:
        for path in paths:
            kind = path.suffix.lstrip(".").lower()
            if kind not in FORMATS:
                raise ValueError(f"{path}: a figure file ends in one of {', '.join('.' + f for f in FORMATS)}")
            buffer = io.BytesIO()
            bbox = "tight" if tight else None
            figure.savefig(buffer, format=kind, dpi=DPI, bbox_inches=bbox, metadata=NO_DATE[kind])
            rendered[path] = buffer.getvalue()
    finally:
        plt.close(figure)
    for path, data in rendered.items():
        atomic_write(path, data)


def plot_mask_sensitivity(
    per_case: pd.DataFrame, grid: dict[str, dict], out_csv: Path, figures: Path | Sequence[Path]
) -> pd.DataFrame:
    """Mean Dice of MICD over the mask grid: one heat map (mask ratio x block size) per labelled ratio.

    ``grid`` maps each variant (the ``method`` column) to its ``mask_ratio`` and ``mask_block``.
    Each cell is the protocol's mean foreground Dice, averaged over seeds; the CSV holds the
    same numbers in long form. Cells of ``grid`` without runs (not trained yet) are drawn blank.
    """
    from micd.evaluation.measures import summarise

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
    save_figure(figure, figures)
    return cells


def pixels(size_inches: tuple[float, float]) -> tuple[int, int]:
    """(width, height) in pixels of a figure of ``size_inches`` saved with ``tight=False``
    (matplotlib truncates the fractional pixel)."""
    return int(size_inches[0] * DPI), int(size_inches[1] * DPI)


DICE_VS_RATIO_SIZE = (7.0, 4.0)  # inches


def plot_dice_vs_ratio(
    per_case: pd.DataFrame, outputs: Path | Sequence[Path], method_order: Sequence[str] | None = None
) -> None:
    """Mean Dice against the labelled ratio, one line per method, error bars the std over seeds,
    in each of ``outputs`` (:func:`save_figure`).

    Each point is the mean over seeds of each run's protocol mean Dice (as in the tables, std
    with ddof=0); a single seed has no error bar.
    """
    save_figure(dice_vs_ratio_figure(per_case, method_order), outputs, tight=False)


def dice_vs_ratio_figure(per_case: pd.DataFrame, method_order: Sequence[str] | None = None) -> plt.Figure:
    """The figure of :func:`plot_dice_vs_ratio`."""
    from micd.evaluation.measures import summarise

    runs = summarise(per_case)
    points = runs.groupby(["dataset", "ratio", "method"], as_index=False)["mean_dice"].agg(
        mean="mean", std=lambda s: s.std(ddof=0)
    )
    points = order_rows(points, method_order, appearance=per_case)
    figure, ax = plt.subplots(figsize=DICE_VS_RATIO_SIZE, layout="constrained")
    methods = list(dict.fromkeys(points["method"]))
    ratios = sorted(points["ratio"].unique())
    # methods side by side around each ratio (1.5 % of the axis apart), so that equal scores do not
    # hide one another
    step = 0.015 * max(1, ratios[-1] - ratios[0])
    for k, (method, line) in enumerate(points.groupby("method", sort=False)):
        offset = (k - (len(methods) - 1) / 2) * step
        drawn = ax.errorbar(
            line["ratio"] + offset,
            line["mean"],
            yerr=line["std"],
            marker="o",
            capsize=3,
            color=OKABE_ITO[k % len(OKABE_ITO)],
            label=display_name(method),
        )
        for artist in drawn.get_children():  # a marker at an axis limit is drawn whole, not halved
            artist.set_clip_on(False)
    ax.set_xticks(ratios)
    ax.set_xlabel("labelled training cases (%)")
    seeds = runs.groupby(["ratio", "method"])["seed"].nunique().max()
    ax.set_ylabel("mean Dice (%), error bars: SD over seeds" if seeds > 1 else "mean Dice (%), one seed")
    # the data's own range (with room), so that small differences stay visible; a range that
    # reaches 0 keeps room below it, so that a series of zeros lies above the spine
    low, high = (points["mean"] - points["std"]).min(), (points["mean"] + points["std"]).max()
    margin = max(2.0, 0.1 * (high - low))
    top = min(100.0, high + margin)
    bottom = low - margin if low - margin > 0 else -ZERO_ROOM * top
    ax.set_ylim(bottom, top)
    ax.margins(x=0.08)
    ax.grid(alpha=0.3)
    figure.legend(title="Method", loc="outside right upper", fontsize="small")
    ax.set_title(f"Dice against labelled ratio, {points['dataset'].iloc[0]}", fontsize="medium")
    return figure


CURVE_PANEL = (4.2, 2.6)  # inches per panel
PLAIN_NUMBER = FuncFormatter(lambda value, _: f"{value:g}")
CURVE_LEGEND = 0.9  # inches for the title above and the legend below the panels


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


def _plot_validation(ax: plt.Axes, validation: pd.DataFrame, top: float) -> None:
    """The validation Dice of one panel, dashed, on a right-hand axis up to ``top``, the highest
    validation Dice of the figure (:func:`dice_axis`), so that every panel has the same scale."""
    twin = ax.twinx()
    twin.plot(validation["iteration"], validation["eval_mean_dice"], "k--o", markersize=3, linewidth=1, clip_on=False)
    twin.set_ylim(dice_axis(top))
    twin.set_ylabel("validation Dice (%)")


def term_colours(terms: Sequence[str]) -> dict[str, str]:
    """One Okabe-Ito colour per loss term, in order (repeating after seven), black for the total."""
    return dict(zip(terms, cycled(OKABE_ITO, len(terms)))) | {TOTAL: "#000000"}


def plot_training_curves(
    losses: pd.DataFrame,
    validation: pd.DataFrame,
    outputs: Path | Sequence[Path],
    method_order: Sequence[str] | None = None,
) -> None:
    """The figure of :func:`training_curves_figure` in each of ``outputs`` (:func:`save_figure`)."""
    save_figure(training_curves_figure(losses, validation, method_order), outputs, tight=False)


def training_curves_figure(
    losses: pd.DataFrame, validation: pd.DataFrame, method_order: Sequence[str] | None = None
) -> plt.Figure:
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
    colours = term_colours(terms)
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
            panel = mean_dice[(mean_dice["method"] == method) & (mean_dice["ratio"] == ratio)]
            _plot_validation(ax, panel, top=mean_dice["eval_mean_dice"].max())
            ax.set_title(f"{display_name(method)}, {format_ratio(ratio)} labelled", fontsize="medium")
    handles = [plt.Line2D([], [], color=colours[t], label=t) for t in terms]
    handles.append(plt.Line2D([], [], color="k", linestyle=":", linewidth=1.8, label="total loss"))
    handles.append(plt.Line2D([], [], color="k", linestyle="--", marker="o", markersize=3, label="validation Dice"))
    # what the curves are (smoothing, sup's scale) is the caption's, in the report and the README
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize="small")
    one_line_title(figure, f"Training curves, {losses['dataset'].iloc[0]}")
    return figure


QUALITATIVE_PANEL = 2.2  # inches per panel side
LEGEND_ENTRY = (1.5, 0.22)  # inches per organ name in the legend below the panels
OVERLAY_ALPHA = 0.7  # opacity of the organ colours over the CT
SOFT_TISSUE_GREY = 0.35  # liver, spleen and muscle (30-50 HU) in the -75..275 HU window
ORGAN_PALETTE = (
    "#ff4000",
    "#ffff00",
    "#40409f",
    "#dfff9f",
    "#4060ff",
    "#006020",
    "#80dfff",
    "#20df80",
    "#ff40bf",
    "#ff2060",
    "#80df20",
    "#409fff",
    "#0000ff",
    "#606080",
    "#bf2000",
)
"""Organ colours, by AMOS label 1..15, chosen by a max-min search over sRGB colours (9 levels a
channel, lightness L* at least 30, so that none sinks into black fat): drawn at
:data:`OVERLAY_ALPHA` over black, white or any of three CT greys between, with normal sight
and with deuteranopia simulated (Machado et al. 2009), any two organs are at least 9.9 apart
(CIEDE2000; tab20 at alpha 0.6, the earlier palette, came to 2.5), organs that touch in the real
CT got the most distinct pairs, each stays at least 12 from the grey under it and 20 from the
white of the orientation letters. tests/report/test_figures.py checks these distances."""


def _legend_columns(width: float, n_entries: int) -> int:
    return max(1, min(n_entries, int(width // LEGEND_ENTRY[0])))


def qualitative_size(n_rows: int, n_columns: int, n_classes: int) -> tuple[float, float]:
    """Figure size (inches) for ``n_rows`` x ``n_columns`` panels and a legend of ``n_classes`` organs."""
    width = QUALITATIVE_PANEL * n_columns
    legend_rows = -(-n_classes // _legend_columns(width, n_classes))
    return width, QUALITATIVE_PANEL * n_rows + LEGEND_ENTRY[1] * legend_rows + 0.3


def class_colours(classes: Sequence[OrganClass]) -> dict[int, tuple[float, float, float]]:
    """A fixed colour per foreground class id (:data:`ORGAN_PALETTE`, repeated past 15)."""
    palette = [to_rgb(c) for c in ORGAN_PALETTE]
    return {c.label: palette[(c.label - 1) % len(palette)] for c in classes if c.label != 0}


def over_grey(colour: Sequence[float], grey: float, alpha: float = OVERLAY_ALPHA) -> tuple[float, ...]:
    """An organ colour as the overlay draws it over a CT grey value (in [0, 1])."""
    return tuple(alpha * c + (1 - alpha) * grey for c in colour)


def radiological(slice_yx: np.ndarray) -> np.ndarray:
    """An axial slice of a RAS-ordered (D, H, W) volume as radiologists view it: the patient's
    right on the image's left, anterior up (both axes reversed)."""
    return slice_yx[::-1, ::-1]


LETTER_COLOUR = "white"
LETTER_OUTLINE = [patheffects.withStroke(linewidth=1.5, foreground="black")]


def _orientation_letters(ax: plt.Axes) -> None:
    for x, y, letter in ((0.02, 0.5, "R"), (0.98, 0.5, "L"), (0.5, 0.98, "A"), (0.5, 0.02, "P")):
        ax.text(
            x,
            y,
            letter,
            transform=ax.transAxes,
            color=LETTER_COLOUR,
            path_effects=LETTER_OUTLINE,
            fontsize="x-small",
            fontweight="bold",
            ha="center",
            va="center",
        )


def slice_with_most_foreground(truth: np.ndarray) -> int:
    """The axial slice (first axis of a (D, H, W) label map) with the most foreground voxels."""
    return int(np.argmax((truth > 0).reshape(truth.shape[0], -1).sum(axis=1)))


def slices_showing_every_organ(labels: np.ndarray, count: int = 3) -> list[int]:
    """``count`` axial slices of a (D, H, W) label map (fewer if fewer hold an organ), in slice
    order: greedily those that show the most organs not yet shown, then, once every organ is
    shown, the slices with organs farthest from those chosen."""
    present = {d: set(np.unique(labels[d]).tolist()) - {0} for d in range(labels.shape[0])}
    candidates = [d for d, organs in present.items() if organs]
    shown: set[int] = set()
    chosen: list[int] = []
    while len(chosen) < min(count, len(candidates)):
        left = [d for d in candidates if d not in chosen]
        gap = {d: min((abs(d - c) for c in chosen), default=0) for d in left}
        depth = max(left, key=lambda d: (len(present[d] - shown), gap[d], len(present[d])))
        chosen.append(depth)
        shown |= present[depth]
    return sorted(chosen)


def _overlay(labels: np.ndarray, colours: Mapping[int, tuple[float, float, float]], alpha: float) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4))
    for label, colour in colours.items():
        rgba[labels == label] = (*colour, alpha)
    return rgba


def _draw_slice(ax: plt.Axes, image: np.ndarray, labels: np.ndarray | None, colours, title: str) -> None:
    """One panel: an axial slice (in [0, 1]) in radiological view, its organs over it if given."""
    ax.imshow(radiological(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if labels is not None:
        ax.imshow(_overlay(radiological(labels), colours, OVERLAY_ALPHA), interpolation="nearest")
    _orientation_letters(ax)
    ax.set_title(title, fontsize="small")
    ax.set_axis_off()


def _organ_legend(figure: plt.Figure | SubFigure, organs: Sequence[OrganClass], colours, width: float) -> None:
    """The organs' names, each beside its colour as drawn over soft tissue."""
    handles = [Patch(color=over_grey(colours[c.label], SOFT_TISSUE_GREY), label=c.name) for c in organs]
    ncol = _legend_columns(width, len(handles))
    figure.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize="x-small")


def _organs_in(classes: Sequence[OrganClass], label_maps: Sequence[np.ndarray]) -> list[OrganClass]:
    found = set().union(*(np.unique(labels).tolist() for labels in label_maps))
    return [c for c in classes if c.label != 0 and c.label in found]


RADIOLOGICAL_NOTE = "radiological view: patient's right on the left"
TITLE_POINTS = 12.0  # a title's largest type ("large" of matplotlib's default 10-point font)


def _wrapped_title(title: str, width: float) -> str:
    return textwrap.fill(title, int(width * 9))  # characters of a suptitle per inch


def one_line_title(figure: plt.Figure, title: str) -> None:
    """``title`` above the figure on one line: in smaller type where the figure is too narrow for it.
    What the figure shows in more words is its caption's (the report's, the README's), not the figure's."""
    text = figure.suptitle(title, fontsize=TITLE_POINTS)
    renderer = figure.canvas.get_renderer()
    room = 0.95 * figure.get_figwidth() * figure.dpi
    width = text.get_window_extent(renderer).width
    if width > room:
        text.set_fontsize(TITLE_POINTS * room / width)


CAPTION_LINE = 0.16  # inches per line of a caption


def plot_qualitative(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[tuple[int, str], np.ndarray],
    classes: Sequence[OrganClass],
    outputs: Path | Sequence[Path],
    title: str,
) -> int:
    """:func:`qualitative_figure` written to each of ``outputs`` (:func:`save_figure`); returns
    the slice drawn."""
    figure, depth = qualitative_figure(image, truth, predictions, classes, title)
    save_figure(figure, outputs, tight=False)
    return depth


def qualitative_figure(
    image: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[tuple[int, str], np.ndarray],
    classes: Sequence[OrganClass],
    title: str,
) -> tuple[plt.Figure, int]:
    """The same axial slice of the image, the ground truth and each method's prediction.

    ``image`` (in [0, 1]), ``truth`` and each prediction are (D, H, W) arrays of one case; the
    slice is the one with the most foreground in the truth (:func:`slice_with_most_foreground`).
    ``predictions`` maps (ratio, method) to a label map: one row per ratio, one column per
    method, in the mapping's order. Image and truth head a first column (the truth as tall as
    every row but the first), or the row when there is one ratio: no panel is left empty. Organs keep their colour (:func:`class_colours`) in every panel; the legend names
    those drawn. Returns the figure and the slice.
    """
    depth = slice_with_most_foreground(truth)
    colours = class_colours(classes)
    ratios = list(dict.fromkeys(r for r, _ in predictions))
    per_ratio = {ratio: [m for r, m in predictions if r == ratio] for ratio in ratios}
    stacked = len(ratios) > 1  # image over ground truth in one column
    first = 1 if stacked else 2  # the first column of predictions
    columns = first + max(len(methods) for methods in per_ratio.values())
    organs = _organs_in(classes, [truth[depth], *(labels[depth] for labels in predictions.values())])
    size = qualitative_size(len(ratios), columns, len(organs))
    figure = plt.figure(figsize=size, layout="constrained")
    grid = figure.add_gridspec(len(ratios), columns)
    _draw_slice(figure.add_subplot(grid[0, 0]), image[depth], None, colours, "image")
    truth_cell = grid[1:, 0] if stacked else grid[0, 1]
    _draw_slice(figure.add_subplot(truth_cell), image[depth], truth[depth], colours, "ground truth")
    for row, ratio in enumerate(ratios):  # each ratio's methods side by side, no gaps
        for column, method in enumerate(per_ratio[ratio], start=first):
            name = f"{display_name(method)}, {format_ratio(ratio)}"
            labels = predictions[(ratio, method)][depth]
            _draw_slice(figure.add_subplot(grid[row, column]), image[depth], labels, colours, name)
    _organ_legend(figure, organs, colours, size[0])
    one_line_title(figure, f"{title}, axial slice {depth}")
    return figure, depth


def plot_label_maps(
    image: np.ndarray,
    label_maps: Mapping[str, np.ndarray],
    classes: Sequence[OrganClass],
    outputs: Path | Sequence[Path],
    title: str,
    **options,
) -> list[int]:
    """:func:`label_maps_figure` (``options``: its keywords) written to each of ``outputs``
    (:func:`save_figure`); returns the slices."""
    figure, slices = label_maps_figure(image, label_maps, classes, title, **options)
    save_figure(figure, outputs, tight=False)
    return slices


def label_maps_figure(
    image: np.ndarray,
    label_maps: Mapping[str, np.ndarray],
    classes: Sequence[OrganClass],
    title: str,
    image_name: str = "image",
    caption: str | None = None,
    slices: Sequence[int] | None = None,
) -> tuple[plt.Figure, list[int]]:
    """Any image with label maps over it: one column per axial slice, the image alone in the
    first row, then one row per label map (named by ``label_maps``' keys).

    ``image`` (in [0, 1]) and each label map are RAS-ordered (D, H, W) arrays on one grid; the
    slices are ``slices`` or those that together show every organ of the first label map
    (:func:`slices_showing_every_organ`). ``caption`` goes under the legend, the figure's
    height growing by :data:`CAPTION_LINE` a line. Returns the figure and the slices.
    """
    maps = list(label_maps.items())
    slices = list(slices) if slices is not None else slices_showing_every_organ(maps[0][1])
    colours = class_colours(classes)
    organs = _organs_in(classes, [labels[depth] for _, labels in maps for depth in slices])
    width, height = qualitative_size(1 + len(maps), len(slices), len(organs))
    caption_lines = textwrap.wrap(caption or "", int(width * 15))
    caption_height = CAPTION_LINE * len(caption_lines) + 0.1 if caption_lines else 0.0
    figure = plt.figure(figsize=(width, height + caption_height), layout="constrained")
    panels = figure
    if caption_lines:  # a strip of its own under the panels and their legend
        panels, strip = figure.subfigures(2, 1, height_ratios=(height, caption_height))
        strip.text(0.5, 0.5, "\n".join(caption_lines), ha="center", va="center", fontsize="x-small")
    axes = panels.subplots(1 + len(maps), len(slices), squeeze=False)
    for column, depth in enumerate(slices):
        _draw_slice(axes[0][column], image[depth], None, colours, f"{image_name}, axial slice {depth}")
        for row, (name, labels) in enumerate(maps, start=1):
            _draw_slice(axes[row][column], image[depth], labels[depth], colours, name)
    _organ_legend(panels, organs, colours, width)
    figure.suptitle(_wrapped_title(f"{title} ({RADIOLOGICAL_NOTE})", width))
    return figure, slices
