"""Results tables in the paper's layout: Markdown, LaTeX (booktabs), HTML and CSV.

One block of rows per labelled ratio, one row per method: mean Dice and mean ASD as mean ± std
over seeds, the paired Wilcoxon p against MICD, then Dice per organ class. Published rows
(DHC's tables, ``config/published/dhc_tables.csv``) follow ours in each block, marked as such.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from micd.atomic import atomic_write
from micd.data.classes import OrganClass
from micd.evaluation.metrics import class_means, summarise
from micd.methods import display_name
from micd.report.stats import MIN_PAIRED_CASES, P_COLUMN, REFERENCE_METHOD, p_values_vs_micd

TABLE_KEYS: list[str] = ["dataset", "ratio", "method"]
OURS, PUBLISHED = "ours", "published"
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
    """The published rows of ``family`` at ``ratios`` in :func:`results_table`'s columns.

    ``reference`` is the long published table (``dataset`` = family, ``labeled_percent``,
    ``method``, ``metric`` ``dice``/``asd``, ``class`` ``mean`` or a short name, ``value``,
    ``std``). Rows are labelled with our ``dataset`` name and ``source`` ``published``, in the
    reference's order; classes we do not have are dropped, classes it lacks are NaN. Empty (with
    the columns) when nothing is published for the family, e.g. the synthetic data set.
    """
    shorts = [c.short for c in classes if c.label != 0]
    rows = reference[(reference["dataset"] == family) & reference["labeled_percent"].isin(list(ratios))]
    keys = ["labeled_percent", "method"]
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
    table["n_seeds"] = pd.NA
    table[P_COLUMN] = float("nan")
    return table.reindex(columns=[*SUMMARY_COLUMNS, *shorts])


def with_published(ours: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Our rows with the published ones of the same labelled ratio: each right after our row of
    the same method (the paper's name, :func:`micd.methods.display_name`), the rest at the end
    of the ratio's block."""
    if published.empty:
        return ours
    blocks = []
    for (dataset, ratio), block in ours.groupby(["dataset", "ratio"], sort=False):
        theirs = published[(published["dataset"] == dataset) & (published["ratio"] == ratio)]
        matched = set()
        for _, row in block.iterrows():
            same = theirs[theirs["method"] == display_name(row["method"])]
            matched |= set(same.index)
            blocks += [row.to_frame().T, same]
        blocks.append(theirs.drop(index=list(matched)))
    both = pd.concat([b for b in blocks if not b.empty], ignore_index=True)
    return both.astype({c: ours[c].dtype for c in ("ratio",)}).reset_index(drop=True)


def table_notes(n_cases: int | None, has_published: bool) -> str:
    """What the table's numbers, bold and p-values mean; appended to each caption."""
    cases = f"the {n_cases} test cases" if n_cases else "the test cases"
    notes = (
        "Dice (%) and ASD (voxels): mean ± std over seeds (the mean alone for one seed); class columns: Dice (%). "
        "Bold: the best of our rows in each column within each labelled ratio, unless all tie (published rows do not "
        "compete). "
        f"p vs {display_name(REFERENCE_METHOD)}: two-sided paired Wilcoxon signed-rank test over {cases} of each "
        f"case's mean Dice (averaged over seeds) against {display_name(REFERENCE_METHOD)}; {_MISSING} where "
        f"undefined ({display_name(REFERENCE_METHOD)} itself, fewer than {MIN_PAIRED_CASES} non-zero differences)."
    )
    if has_published:
        return (
            notes
            + " Rows marked (published): as reported by DHC (Wang & Li, MICCAI 2023), ± std over 3 runs where published."
        )
    return notes + " No published results exist for this data set."


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Display:
    """A table as printed: header, and rows of cells grouped in blocks (one per labelled ratio)."""

    header: list[str]
    blocks: list[list[list[Cell]]]
    n_left: int = 2  # left-aligned leading columns; the rest are numbers


def _mean_std(mean: float, std: float, n_seeds: object, source: str) -> str:
    if math.isnan(mean):
        return _MISSING
    shows_std = not math.isnan(std) and (source == PUBLISHED or n_seeds > 1)
    return f"{mean:.2f} ± {std:.1f}" if shows_std else f"{mean:.2f}"


def _p_value(p: float) -> str:
    if math.isnan(p):
        return _MISSING
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


def _cells(row: pd.Series, class_columns: Sequence[str], bold: Mapping[str, bool]) -> list[Cell]:
    """One printed row; ``bold`` says which of its value columns hold a best value."""
    published = row["source"] == PUBLISHED

    def mean_std(metric: str) -> Cell:
        text = _mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], row["n_seeds"], row["source"])
        return Cell(text, bold[f"{metric}_mean"])

    return [
        Cell(format_ratio(row["ratio"])),
        Cell(f"{row['method']} (published)" if published else display_name(str(row["method"]))),
        Cell(_MISSING if published else str(row["n_seeds"])),
        mean_std("dice"),
        mean_std("asd"),
        Cell(_p_value(row[P_COLUMN])),
        *(Cell(_MISSING if math.isnan(row[c]) else f"{row[c]:.1f}", bold[c]) for c in class_columns),
    ]


def display(table: pd.DataFrame) -> Display:
    """The cells of a :func:`results_table` (with or without published rows), best values bold."""
    class_columns = [c for c in table.columns if c not in SUMMARY_COLUMNS]
    header = [
        "Labelled",
        "Method",
        "Seeds",
        "Dice (%) ↑",
        "ASD (voxels) ↓",
        f"p vs {display_name(REFERENCE_METHOD)}",
        *class_columns,
    ]
    blocks = []
    for _, block in table.groupby(["dataset", "ratio"], sort=False):
        best = pd.DataFrame(
            {
                "dice_mean": _best_mask(block, "dice_mean", 2, lowest=False),
                "asd_mean": _best_mask(block, "asd_mean", 2, lowest=True),
                **{c: _best_mask(block, c, 1, lowest=False) for c in class_columns},
            }
        )
        blocks.append([_cells(row, class_columns, best.loc[index]) for index, row in block.iterrows()])
    return Display(header, blocks)


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    """Markdown: the caption, a blank line, then the table."""
    shown = display(table)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    align = ["---"] * shown.n_left + ["---:"] * (len(shown.header) - shown.n_left)
    lines = [caption, "", line(shown.header), line(align)]
    for block in shown.blocks:
        lines += [line([f"**{c.text}**" if c.bold else c.text for c in row]) for row in block]
    return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "<": r"$<$",
    "–": "--",
}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A LaTeX ``table`` with a booktabs ``tabular``; a rule between labelled ratios."""
    shown = display(table)

    def line(cells: Sequence[Cell | str]) -> str:
        texts = [
            (rf"\textbf{{{_latex(c.text)}}}" if c.bold else _latex(c.text)) if isinstance(c, Cell) else _latex(c)
            for c in cells
        ]
        return " & ".join(texts) + r" \\"

    spec = "l" * shown.n_left + "r" * (len(shown.header) - shown.n_left)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_latex(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        line(shown.header),
    ]
    for block in shown.blocks:
        lines.append(r"\midrule")
        lines += [line(row) for row in block]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_HTML_STYLE = """\
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; font-size: 0.8em; }
caption { caption-side: top; text-align: left; max-width: 60em; padding-bottom: 0.6em; }
th, td { padding: 0.15em 0.35em; text-align: right; }
td { white-space: nowrap; }
th { vertical-align: bottom; }
th.left, td.left { text-align: left; }
thead tr { border-top: 2px solid black; border-bottom: 1px solid black; }
tbody { border-bottom: 1px solid black; }
tbody:last-child { border-bottom: 2px solid black; }
"""


def two_lines(header: str) -> str:
    """A header of several words broken at the space nearest its middle: value columns are
    narrower than their one-line headers (``Dice (%) ↑`` over ``64.54``)."""
    spaces = [i for i, c in enumerate(header) if c == " "]
    if not spaces:
        return html.escape(header)
    cut = min(spaces, key=lambda i: abs(i - len(header) / 2))
    return html.escape(header[:cut]) + "<br>" + html.escape(header[cut + 1 :])


def to_html(table: pd.DataFrame, caption: str) -> str:
    """A standalone HTML page of the table (what the Snakemake report shows)."""
    shown = display(table)

    def cell(tag: str, column: int, content: Cell | str) -> str:
        if tag == "th" and column >= shown.n_left:
            return f"<th>{two_lines(content)}</th>"
        text = html.escape(content.text if isinstance(content, Cell) else content)
        if isinstance(content, Cell) and content.bold:
            text = f"<b>{text}</b>"
        align = ' class="left"' if column < shown.n_left else ""
        return f"<{tag}{align}>{text}</{tag}>"

    head = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(shown.header)) + "</tr>"
    bodies = [
        "<tbody>" + "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in block)
        for block in shown.blocks
    ]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(caption[:80])}</title>\n<style>\n{_HTML_STYLE}</style>\n</head>\n<body>\n"
        f"<table>\n<caption>{html.escape(caption)}</caption>\n<thead>{head}</thead>\n"
        + "\n".join(bodies)
        + "\n</table>\n</body>\n</html>\n"
    )


@dataclass(frozen=True)
class TablePaths:
    markdown: Path
    latex: Path
    html: Path
    csv: Path

    def all(self) -> list[Path]:
        return [self.markdown, self.latex, self.html, self.csv]


def write_table(table: pd.DataFrame, paths: TablePaths, caption: str) -> None:
    """Write a table (with or without published rows) in every format; the CSV holds the raw numbers."""
    atomic_write(paths.markdown, to_markdown(table, caption))
    atomic_write(paths.latex, to_latex(table, caption))
    atomic_write(paths.html, to_html(table, caption))
    atomic_write(paths.csv, table.to_csv(index=False))
