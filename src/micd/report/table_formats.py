"""The printed forms of a results table (:class:`micd.report.tables.Display`): Markdown, LaTeX and HTML.

Markdown and HTML repeat the labelled ratio in a first column; LaTeX heads each ratio's block with a
row of its own, so that the main table fits a journal's column (``table``) and the per-organ table the
page's width (``table*``, which spans both columns of a two-column paper).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from micd.atomic import atomic_write
from micd.report.tables import Cell, Display, main_display, organ_display

LATEX_PREAMBLE = r"\usepackage{booktabs}"
"""What a paper's preamble needs for the LaTeX tables (their rules: \\toprule, \\midrule, \\bottomrule)."""


def to_markdown(shown: Display, caption: str) -> str:
    """Markdown: the caption, a blank line, then the table."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = ["Labelled", "Method", *(c.header for c in shown.columns)]
    lines = [caption, "", line(header), line(["---", "---"] + ["---:"] * len(shown.columns))]
    for block in shown.blocks:
        lines += [line([block.ratio, *(f"**{c.text}**" if c.bold else c.text for c in row)]) for row in block.rows]
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
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "§": r"$^\S$",
    "¶": r"$^\P$",
    "³": r"$^3$",
}


def latex_text(text: str) -> str:
    """Plain text as LaTeX source (special characters escaped, symbols in math mode)."""
    return "".join(_LATEX.get(char, char) for char in text)


def _latex_cell(cell: Cell) -> str:
    text = latex_text(cell.text.replace(" ± ", "±"))  # 64.16$\pm$0.4, as DHC prints it: the column stays narrow
    return rf"\textbf{{{text}}}" if cell.bold else text


def to_latex(shown: Display, caption: str, label: str, wide: bool = False) -> str:
    """A booktabs ``table`` (``table*``, smaller type and narrower column gaps if ``wide``), its caption
    above it; a row naming the labelled ratio heads each block."""
    environment = "table*" if wide else "table"
    width = 1 + len(shown.columns)
    headers = [c.latex if c.latex is not None else latex_text(c.header) for c in shown.columns]
    lines = [
        f"% needs {LATEX_PREAMBLE} in the preamble",
        rf"\begin{{{environment}}}[t]",
        r"\centering",
        rf"\caption{{{latex_text(caption)}}}",
        rf"\label{{{label}}}",
        *([r"\footnotesize", r"\setlength{\tabcolsep}{3pt}"] if wide else [r"\small", r"\setlength{\tabcolsep}{3pt}"]),
        rf"\begin{{tabular}}{{l{'r' * len(shown.columns)}}}",
        r"\toprule",
        " & ".join(["Method", *headers]) + r" \\",
    ]
    for block in shown.blocks:
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{latex_text(block.ratio)} labelled}}}} \\")
        lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in block.rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{environment}}}"]
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


def to_html(shown: Display, caption: str) -> str:
    """A standalone HTML page of the table (what the Snakemake report shows)."""

    def td(cell: Cell | str, left: bool = False) -> str:
        text = html.escape(cell.text if isinstance(cell, Cell) else cell)
        if isinstance(cell, Cell) and cell.bold:
            text = f"<b>{text}</b>"
        return f'<td class="left">{text}</td>' if left else f"<td>{text}</td>"

    head = (
        '<tr><th class="left">Labelled</th><th class="left">Method</th>'
        + "".join(f"<th>{two_lines(c.header)}</th>" for c in shown.columns)
        + "</tr>"
    )
    bodies = [
        "<tbody>"
        + "".join(
            "<tr>" + td(block.ratio, left=True) + td(row[0], left=True) + "".join(td(c) for c in row[1:]) + "</tr>"
            for row in block.rows
        )
        + "</tbody>"
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
    """The files of a results table: the main table in Markdown, LaTeX, HTML and the CSV of every
    number (per-organ Dice included), then the per-organ table in Markdown, LaTeX and HTML."""

    markdown: Path
    latex: Path
    html: Path
    csv: Path
    organs_markdown: Path
    organs_latex: Path
    organs_html: Path

    def all(self) -> list[Path]:
        return [
            self.markdown,
            self.latex,
            self.html,
            self.csv,
            self.organs_markdown,
            self.organs_latex,
            self.organs_html,
        ]


@dataclass(frozen=True)
class Captions:
    main: str
    organs: str


def write_tables(
    table: pd.DataFrame, paths: TablePaths, captions: Captions, label: str, main: pd.DataFrame | None = None
) -> None:
    """Write the main and the per-organ table of a :func:`micd.report.tables.results_table` (with or
    without published rows) in every format; ``main``: the main table's rows where not all of ``table``'s
    (:func:`micd.report.tables.main_rows`; the CSV and the per-organ table hold every row). ``label`` is
    the main table's LaTeX label, the per-organ table's adds ``-per-organ``."""
    main, organs = main_display(table if main is None else main), organ_display(table)
    atomic_write(paths.markdown, to_markdown(main, captions.main))
    atomic_write(paths.latex, to_latex(main, captions.main, label))
    atomic_write(paths.html, to_html(main, captions.main))
    atomic_write(paths.csv, table.to_csv(index=False))
    atomic_write(paths.organs_markdown, to_markdown(organs, captions.organs))
    atomic_write(paths.organs_latex, to_latex(organs, captions.organs, f"{label}-per-organ", wide=True))
    atomic_write(paths.organs_html, to_html(organs, captions.organs))
