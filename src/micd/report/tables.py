"""Results tables in the papers' layout, computed and laid out for print (micd.report.table_formats
writes them: Markdown, LaTeX, HTML, CSV).

One block of rows per labelled ratio, one row per method. The main table: mean Dice and mean ASD as
mean ± std over seeds, and the paired Wilcoxon p against MICD where MICD is a row; the per-organ table:
Dice per organ class. Published rows (``config/published/``: DHC's tables and those published since on
its splits, :mod:`micd.report.published`) follow ours in each block, each marked by who reported it
on which pipeline.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from micd.data.classes import OrganClass
from micd.evaluation.measures import class_means, summarise
from micd.methods import display_name
from micd.report.published import belongs_to, complete, mark_rank
from micd.report.stats import P_COLUMN, REFERENCE_METHOD, p_values_vs_micd

TABLE_KEYS: list[str] = ["dataset", "ratio", "method"]
OURS, PUBLISHED = "ours", "published"
PUBLISHED_COLUMNS: list[str] = ["pipeline", "reported_by", "mark"]
"""Columns of a table with published rows after :data:`SUMMARY_COLUMNS`: whose table and which
pipeline a published row comes from, and its mark after the name (short: the main table fits a
journal's column); empty for ours."""
SUMMARY_COLUMNS: list[str] = [
    *TABLE_KEYS,
    "source",
    "n_seeds",
    "dice_mean",
    "dice_std",
    "asd_mean",
    "asd_std",
    P_COLUMN,
]
"""Leading columns of :func:`results_table`; the per-class Dice columns follow."""

MISSING = "–"


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

    Input columns: those of :func:`micd.evaluation.measures.class_means`. Output columns:
    :data:`SUMMARY_COLUMNS` (``source`` is ``ours``; ``n_seeds``; mean and std over seeds of
    each seed's protocol mean Dice and ASD in voxels, std with ddof=0 as DHC's ``np.std``; the
    Wilcoxon p against MICD, :func:`micd.report.stats.p_values_vs_micd`), then one mean-Dice
    column per foreground class of ``classes``, named by its short name, in label order (NaN
    where never scored). Rows are ordered by dataset, ratio, then ``method_order`` (see
    :func:`order_rows`).
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
    table.insert(len(TABLE_KEYS), "source", OURS)
    table = table.merge(p_values_vs_micd(per_case), on=TABLE_KEYS, how="left", validate="one_to_one")
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


def published_table(
    reference: pd.DataFrame,
    family: str,
    dataset: str,
    ratios: Sequence[int],
    classes: Sequence[OrganClass],
) -> pd.DataFrame:
    """The published rows of ``family`` at ``ratios`` in :func:`results_table`'s columns, then
    :data:`PUBLISHED_COLUMNS`.

    ``reference`` is the long published table (:mod:`micd.report.published`: ``dataset`` = family,
    ``labeled_percent``, ``method``, ``metric`` ``dice``/``asd``, ``class`` ``mean`` or a short name,
    ``value``, ``std``, and ``pipeline``, ``reported_by``, ``mark`` as
    :func:`~micd.report.published.complete` gives them where it lacks them). Rows are labelled with
    our ``dataset`` name and ``source`` ``published``, ordered by mark (the files' order), then by
    each method's first appearance in the reference; classes we do not have are dropped, classes it
    lacks are NaN. Empty (with the columns) when nothing is published for the family, e.g. the
    synthetic data set.
    """
    if "mark" not in reference.columns:
        reference = complete(reference)
    shorts = [c.short for c in classes if c.label != 0]
    rows = reference[(reference["dataset"] == family) & reference["labeled_percent"].isin(list(ratios))]
    keys = ["labeled_percent", "method", *PUBLISHED_COLUMNS]
    means = rows[rows["class"] == "mean"].pivot_table(index=keys, columns="metric", values=["value", "std"], sort=False)
    # a std never published (AMOS) leaves no column: reindex brings it back as NaN
    means = means.reindex(columns=pd.MultiIndex.from_product([["value", "std"], ["dice", "asd"]]))
    per_class = rows[(rows["metric"] == "dice") & (rows["class"] != "mean")]
    per_class = per_class.pivot_table(index=keys, columns="class", values="value", sort=False)
    table = pd.DataFrame(index=means.index)
    for metric in ("dice", "asd"):
        table[f"{metric}_mean"] = means[("value", metric)]
        table[f"{metric}_std"] = means[("std", metric)]
    table = table.join(per_class.reindex(columns=shorts)).reset_index()
    table = table.rename(columns={"labeled_percent": "ratio"}).assign(dataset=dataset, source=PUBLISHED)
    table = table.sort_values("mark", key=lambda marks: marks.map(mark_rank), kind="stable").reset_index(drop=True)
    table["n_seeds"] = pd.NA
    table[P_COLUMN] = float("nan")
    return table.reindex(columns=[*SUMMARY_COLUMNS, *PUBLISHED_COLUMNS, *shorts])


def with_published(ours: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Our rows with the published ones of the same labelled ratio: each right after our row of
    its method (:func:`micd.report.published.belongs_to`: ``DHC`` and ``DHC (re-run)`` after
    our DHC), the rest at the end of the ratio's block. Columns: ours' summary columns, then
    :data:`PUBLISHED_COLUMNS`, then the per-organ Dice."""
    if published.empty:
        return ours
    blocks = []
    for (dataset, ratio), block in ours.groupby(["dataset", "ratio"], sort=False):
        theirs = published[(published["dataset"] == dataset) & (published["ratio"] == ratio)]
        matched = set()
        for _, row in block.iterrows():
            mine = [
                belongs_to(name, row["method"]) and index not in matched for index, name in theirs["method"].items()
            ]
            same = theirs[mine]
            matched |= set(same.index)
            blocks += [row.to_frame().T, same]
        blocks.append(theirs.drop(index=list(matched)))
    both = pd.concat([b for b in blocks if not b.empty], ignore_index=True)
    columns = [*SUMMARY_COLUMNS, *PUBLISHED_COLUMNS, *class_columns(ours)]
    return both.reindex(columns=columns).astype({c: ours[c].dtype for c in ("ratio",)}).reset_index(drop=True)


def main_rows(table: pd.DataFrame, methods: Sequence[str] | None) -> pd.DataFrame:
    """The rows of the main table: all of ours, and the published rows of ``methods``
    (:func:`~micd.report.published.belongs_to`); every row where ``methods`` is None."""
    if methods is None:
        return table
    shown = [
        source != PUBLISHED or any(belongs_to(name, method) for method in methods)
        for source, name in zip(table["source"], table["method"], strict=True)
    ]
    return table[shown].reset_index(drop=True)


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Column:
    """A value column as printed: its header, and the LaTeX source of the header where it is not the
    header escaped (LaTeX headers are shorter, the caption giving the units)."""

    header: str
    latex: str | None = None


@dataclass(frozen=True)
class Block:
    """The rows of one labelled ratio; each row is the method's cell, then one cell per value column."""

    ratio: str
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Display:
    """A table as printed: its value columns (after the method) and its rows, one block per labelled ratio."""

    columns: list[Column]
    blocks: list[Block]


def shows_p(table: pd.DataFrame) -> bool:
    """Whether a table has the p column: only where MICD, the method each p is against, is one of our rows."""
    return bool(((table["source"] == OURS) & (table["method"] == REFERENCE_METHOD)).any())


def class_columns(table: pd.DataFrame) -> list[str]:
    """The per-organ Dice columns of a :func:`results_table`, in label order."""
    return [c for c in table.columns if c not in SUMMARY_COLUMNS and c not in PUBLISHED_COLUMNS]


def _mean_std(mean: float, std: float, n_seeds: object, source: str) -> str:
    if math.isnan(mean):
        return MISSING
    shows_std = not math.isnan(std) and (source == PUBLISHED or n_seeds > 1)
    return f"{mean:.2f} ± {std:.1f}" if shows_std else f"{mean:.2f}"


def _p_value(p: float) -> str:
    if math.isnan(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _printed(values: pd.Series, digits: int) -> pd.Series:
    """Values as the table prints them, so that ties in print are ties in bolding."""
    return values.map(lambda v: float(f"{v:.{digits}f}"))


def _best_mask(block: pd.DataFrame, column: str, digits: int, lowest: bool) -> pd.Series:
    """Which of our rows print the best value of ``column``; none when all of them tie."""
    shown = _printed(block[column], digits).where(block["source"] == OURS)
    best = shown.min() if lowest else shown.max()
    is_best = shown.eq(best) & shown.notna()
    all_tie = is_best.sum() == shown.notna().sum()
    return is_best & ~all_tie


def _method_cell(row: pd.Series) -> Cell:
    if row["source"] == PUBLISHED:
        return Cell(f"{row['method']}{row['mark']}")
    return Cell(display_name(str(row["method"])))


def _blocks(table: pd.DataFrame, bolded: Mapping[str, tuple[int, bool]], cells) -> list[Block]:
    """One :class:`Block` per labelled ratio. ``bolded`` maps each column that competes for bold to the
    digits it is printed with and whether lowest is best; ``cells(row, bold)`` gives a row's value cells."""
    blocks = []
    for (_, ratio), block in table.groupby(["dataset", "ratio"], sort=False):
        best = pd.DataFrame({c: _best_mask(block, c, digits, lowest) for c, (digits, lowest) in bolded.items()})
        rows = [[_method_cell(row), *cells(row, best.loc[index])] for index, row in block.iterrows()]
        blocks.append(Block(format_ratio(ratio), rows))
    return blocks


def main_display(table: pd.DataFrame) -> Display:
    """The main table of a :func:`results_table` (with or without published rows), as DHC's and MICD's
    papers print it: method, mean Dice, mean ASD, and the p against MICD where MICD is a row; best values bold."""
    with_p = shows_p(table)
    columns = [Column("Dice (%) ↑", r"Dice (\%) $\uparrow$"), Column("ASD (voxels) ↓", r"ASD $\downarrow$")]
    if with_p:
        columns.append(Column(f"p vs {display_name(REFERENCE_METHOD)}", "$p$"))

    def cells(row: pd.Series, bold: pd.Series) -> list[Cell]:
        values = [
            Cell(_mean_std(row[f"{m}_mean"], row[f"{m}_std"], row["n_seeds"], row["source"]), bold[f"{m}_mean"])
            for m in ("dice", "asd")
        ]
        return values + ([Cell(_p_value(row[P_COLUMN]))] if with_p else [])

    return Display(columns, _blocks(table, {"dice_mean": (2, False), "asd_mean": (2, True)}, cells))


def organ_display(table: pd.DataFrame) -> Display:
    """The per-organ Dice of a :func:`results_table`, one column per organ; best values bold."""
    organs = class_columns(table)

    def cells(row: pd.Series, bold: pd.Series) -> list[Cell]:
        return [Cell(MISSING if math.isnan(row[c]) else f"{row[c]:.1f}", bold[c]) for c in organs]

    return Display([Column(c) for c in organs], _blocks(table, {c: (1, False) for c in organs}, cells))
