"""The LaTeX tables compiled by pdflatex in a two-column paper: the main table within a column, the
per-organ table within the page, both with the published rows of DHC's tables and of those since
(Debian: texlive-latex-base texlive-latex-recommended; skipped, saying why, where pdflatex is missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_tables import metrics_files, table_paths

from micd.data.classes import classes_for
from micd.report.build import build_tables
from micd.report.table_formats import LATEX_PREAMBLE

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["supervised", "acisis", "dhc", "ga_cps", "dhc_stac", "micd"]  # "Basak et al.": a long name
PUBLISHED_FILES = [ROOT / "config" / "published" / "dhc_tables.csv", ROOT / "config" / "published" / "since_dhc.csv"]
# the published rows of the main table: those of the methods run here, with their re-runs on other
# pipelines and in other papers ("GA-CPS‡", "DHC§"), and the upper bound's ("V-Net (fully)†", a long name);
# all of each ratio (17 at AMOS 5 %) would make it taller than a column
MAIN_PUBLISHED = ["acisis", "dhc", "ga_cps", "dhc_stac", "fully"]

PAPER = rf"""\documentclass[twocolumn]{{article}}
{LATEX_PREAMBLE}
\begin{{document}}
\input{{main}}
\input{{organs}}
Text of the paper's column, which the main table's width is held to.
\end{{document}}
"""


def amos_per_case(seed: int = 0) -> pd.DataFrame:
    """Per-case scores of ``METHODS`` on AMOS's 15 organs, 2 ratios, 3 seeds and 8 cases, drawn from a
    seeded generator (MICD best, so that the p column has values)."""
    rng = np.random.default_rng(seed)
    rows = []
    for ratio in (5, 10):
        for rank, method in enumerate(METHODS):
            for run_seed in (0, 1, 666):
                for case in range(8):
                    for organ in classes_for("amos")[1:]:
                        dice = np.clip(40 + 8 * rank + ratio + rng.normal(0, 6), 0, 100)
                        rows.append(
                            {
                                "dataset": "amos",
                                "ratio": ratio,
                                "method": method,
                                "seed": run_seed,
                                "case_id": f"amos_{case:04d}",
                                "class_id": organ.label,
                                "class_short": organ.short,
                                "dice": dice,
                                "asd_voxels": 30 - 5 * rank + rng.uniform(0, 3),
                            }
                        )
    return pd.DataFrame(rows)


def compile_tables(folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """The AMOS tables of :func:`amos_per_case` with the published rows of both files, built by the report
    code and compiled in a two-column article; returns pdflatex's result and the PDF."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip(
            "no pdflatex to compile the LaTeX tables with (Debian: apt-get install -y --no-install-recommends "
            "texlive-latex-base texlive-latex-recommended)"
        )
    paths = table_paths(folder, "amos_results")
    note = "Labelled splits: 5 % published, 10 % published."
    build_tables(
        metrics_files(amos_per_case(), folder / "runs"),
        "amos",
        METHODS,
        paths,
        {},
        published_csvs=PUBLISHED_FILES,
        main_published_methods=MAIN_PUBLISHED,
        note=note,
    )
    shutil.copy(paths.latex, folder / "main.tex")
    shutil.copy(paths.organs_latex, folder / "organs.tex")
    (folder / "paper.tex").write_text(PAPER)
    command = [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    return result, folder / "paper.pdf"


def test_the_latex_tables_compile_and_fit_a_column_and_the_page(tmp_path: Path) -> None:
    result, pdf = compile_tables(tmp_path)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-3000:]
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert "Overfull \\hbox" not in log, log  # wider than the column (main) or the page (per organ)
    assert "Float too large" not in log and "Undefined control sequence" not in log
    assert "Output written on paper.pdf (2 pages" in log  # the per-organ table floats to the second page
    main = (tmp_path / "main.tex").read_text()
    for row in (r"GA-CPS$^\ddagger$", r"DHC+STAC$^\S$", r"DHC$^\S$", r"DHC$^\dagger$", r"V-Net (fully)$^\dagger$"):
        assert f"\n{row} & " in main
    assert r"$^\ddagger$: as reported by TAK" in main and "96$^3$ patches" in main
    organs = (tmp_path / "organs.tex").read_text()
    assert "\nTAK$^\\ddagger$ & " in organs and "\nUA-MT$^\\dagger$ & " in organs
