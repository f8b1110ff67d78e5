"""Tests of the results tables (main and per organ; Markdown, LaTeX, HTML, CSV), their captions,
published rows, Wilcoxon p-values and sidecars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from micd.data.classes import OrganClass, classes_for
from micd.report.build import build_tables
from micd.report.captions import TableFacts, main_caption
from micd.report.sidecar import sidecar_path, write_provenance
from micd.report.stats import MIN_PAIRED_CASES, P_COLUMN, p_values_vs_micd, paired_wilcoxon_p
from micd.report.table_formats import Captions, TablePaths, to_latex, to_markdown, write_tables
from micd.report.tables import (
    SUMMARY_COLUMNS,
    main_display,
    organ_display,
    published_table,
    results_table,
    with_published,
)

CLASSES = (
    OrganClass(0, "background", "Bg"),
    OrganClass(1, "spleen", "Sp"),
    OrganClass(2, "right kidney", "RK"),
    OrganClass(3, "left kidney", "LK"),  # never scored: its column shows a dash
)

# (ratio, method, seed) -> per class (dice, asd); cases "a"/"b" get dice + 1 / dice - 1.
RUNS = {
    (20, "micd", 0): {1: (90.0, 1.5), 2: (70.0, 3.5)},
    (20, "dhc", 0): {1: (88.0, 2.0), 2: (72.0, 2.0)},
    (10, "micd", 0): {1: (84.0, 1.0), 2: (70.0, 3.0)},
    (10, "micd", 1): {1: (86.0, 2.0), 2: (66.0, 2.0)},
    (10, "dhc", 0): {1: (80.0, 2.0), 2: (60.0, 4.0)},
    (10, "dhc", 1): {1: (82.0, 3.0), 2: (62.0, 5.0)},
}

# 10 %: micd wins Dice, ASD and both classes. 20 %: Dice ties (80.00 each), so neither is bold.
EXPECTED_MARKDOWN = """\
Table 1. Synapse, reproduced.

| Labelled | Method | Dice (%) ↑ | ASD (voxels) ↓ | p vs MICD |
| --- | --- | ---: | ---: | ---: |
| 10 % | DHC | 71.00 ± 1.0 | 3.50 ± 0.5 | – |
| 10 % | MICD | **76.50 ± 0.5** | **2.00 ± 0.0** | – |
| 20 % | DHC | 80.00 | **2.00** | – |
| 20 % | MICD | 80.00 | 2.50 | – |
"""

EXPECTED_ORGANS_MARKDOWN = """\
Table 2. Synapse, per organ.

| Labelled | Method | Sp | RK | LK |
| --- | --- | ---: | ---: | ---: |
| 10 % | DHC | 81.0 | 61.0 | – |
| 10 % | MICD | **85.0** | **68.0** | – |
| 20 % | DHC | 88.0 | **72.0** | – |
| 20 % | MICD | **90.0** | 70.0 | – |
"""

# a journal column's table: method, Dice, ASD, p; the ratio heads its block
EXPECTED_LATEX = r"""% needs \usepackage{booktabs} in the preamble
\begin{table}[t]
\centering
\caption{Table 1. Synapse, reproduced.}
\label{tab:synapse-results}
\small
\setlength{\tabcolsep}{3pt}
\begin{tabular}{lrrr}
\toprule
Method & Dice (\%) $\uparrow$ & ASD $\downarrow$ & $p$ \\
\midrule
\multicolumn{4}{l}{\emph{10 \% labelled}} \\
DHC & 71.00$\pm$1.0 & 3.50$\pm$0.5 & -- \\
MICD & \textbf{76.50$\pm$0.5} & \textbf{2.00$\pm$0.0} & -- \\
\midrule
\multicolumn{4}{l}{\emph{20 \% labelled}} \\
DHC & 80.00 & \textbf{2.00} & -- \\
MICD & 80.00 & 2.50 & -- \\
\bottomrule
\end{tabular}
\end{table}
"""

# the page's width: table*, smaller type, narrower gaps
EXPECTED_ORGANS_LATEX = r"""% needs \usepackage{booktabs} in the preamble
\begin{table*}[t]
\centering
\caption{Table 2. Synapse, per organ.}
\label{tab:synapse-results-per-organ}
\footnotesize
\setlength{\tabcolsep}{3pt}
\begin{tabular}{lrrr}
\toprule
Method & Sp & RK & LK \\
\midrule
\multicolumn{4}{l}{\emph{10 \% labelled}} \\
DHC & 81.0 & 61.0 & -- \\
MICD & \textbf{85.0} & \textbf{68.0} & -- \\
\midrule
\multicolumn{4}{l}{\emph{20 \% labelled}} \\
DHC & 88.0 & \textbf{72.0} & -- \\
MICD & \textbf{90.0} & 70.0 & -- \\
\bottomrule
\end{tabular}
\end{table*}
"""
CAPTIONS = Captions("Table 1. Synapse, reproduced.", "Table 2. Synapse, per organ.")

# Published rows: Synapse 10 % (two methods, one better than ours everywhere), plus rows that
# must not appear (another family, a ratio we did not run).
PUBLISHED = pd.DataFrame(
    [
        ("synapse", 10, "DHC", "dice", "mean", 90.12, 1.2),
        ("synapse", 10, "DHC", "asd", "mean", 1.05, 0.4),
        ("synapse", 10, "DHC", "dice", "Sp", 95.0, None),
        ("synapse", 10, "DHC", "dice", "RK", 85.0, None),
        ("synapse", 10, "DHC", "dice", "PSV", 50.0, None),  # a class we do not have: dropped
        ("synapse", 10, "CPS", "dice", "mean", 33.55, None),
        ("synapse", 10, "CPS", "asd", "mean", 41.2, None),
        ("synapse", 40, "DHC", "dice", "mean", 99.0, 0.1),
        ("amos", 10, "DHC", "dice", "mean", 64.16, None),
    ],
    columns=["dataset", "labeled_percent", "method", "metric", "class", "value", "std"],
)

EXPECTED_MARKDOWN_WITH_PUBLISHED = """\
Table 1. Synapse, reproduced.

| Labelled | Method | Dice (%) ↑ | ASD (voxels) ↓ | p vs MICD |
| --- | --- | ---: | ---: | ---: |
| 10 % | DHC | 71.00 ± 1.0 | 3.50 ± 0.5 | – |
| 10 % | DHC† | 90.12 ± 1.2 | 1.05 ± 0.4 | – |
| 10 % | MICD | **76.50 ± 0.5** | **2.00 ± 0.0** | – |
| 10 % | CPS† | 33.55 | 41.20 | – |
| 20 % | DHC | 80.00 | **2.00** | – |
| 20 % | MICD | 80.00 | 2.50 | – |
"""


def per_case_frame(runs: dict, cases: dict[str, float], dataset: str = "synapse") -> pd.DataFrame:
    """The long per-case table of ``runs``; each case adds its offset to every class's Dice."""
    rows = [
        {
            "dataset": dataset,
            "ratio": ratio,
            "method": method,
            "seed": seed,
            "case_id": case_id,
            "class_id": class_id,
            "class_short": CLASSES[class_id].short,
            "dice": dice + offset,
            "asd_voxels": asd,
        }
        for (ratio, method, seed), scores in runs.items()
        for class_id, (dice, asd) in scores.items()
        for case_id, offset in cases.items()
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def per_case() -> pd.DataFrame:
    return per_case_frame(RUNS, {"a": 1.0, "b": -1.0})


@pytest.fixture
def table(per_case: pd.DataFrame) -> pd.DataFrame:
    return results_table(per_case, CLASSES, method_order=["dhc", "micd"])


def test_results_table(table: pd.DataFrame) -> None:
    assert list(table.columns) == [*SUMMARY_COLUMNS, "Sp", "RK", "LK"]
    assert table[["ratio", "method", "source", "n_seeds"]].values.tolist() == [
        [10, "dhc", "ours", 2],
        [10, "micd", "ours", 2],
        [20, "dhc", "ours", 1],
        [20, "micd", "ours", 1],
    ]
    assert table["dice_mean"].tolist() == pytest.approx([71.0, 76.5, 80.0, 80.0])
    assert table["dice_std"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert table["asd_mean"].tolist() == pytest.approx([3.5, 2.0, 2.0, 2.5])
    assert table["Sp"].tolist() == pytest.approx([81.0, 85.0, 88.0, 90.0])
    assert table["LK"].isna().all()
    assert table[P_COLUMN].isna().all()  # two test cases are too few to test


def test_method_order_defaults_to_first_appearance(per_case: pd.DataFrame) -> None:
    table = results_table(per_case, CLASSES)
    assert table["method"].tolist() == ["micd", "dhc", "micd", "dhc"]


def test_unknown_class_is_an_error(per_case: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="class ids"):
        results_table(per_case, CLASSES[:2])


def test_main_and_per_organ_tables_in_the_papers_layout_with_the_best_in_bold(table: pd.DataFrame) -> None:
    assert to_markdown(main_display(table), CAPTIONS.main) == EXPECTED_MARKDOWN
    assert to_latex(main_display(table), CAPTIONS.main, "tab:synapse-results") == EXPECTED_LATEX
    assert to_markdown(organ_display(table), CAPTIONS.organs) == EXPECTED_ORGANS_MARKDOWN
    organs_latex = to_latex(organ_display(table), CAPTIONS.organs, "tab:synapse-results-per-organ", wide=True)
    assert organs_latex == EXPECTED_ORGANS_LATEX


def test_write_tables_writes_every_format(table: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = ("t.md", "t.tex", "t.html", "t.csv", "t_per_organ.md", "t_per_organ.tex", "t_per_organ.html")
    paths = TablePaths(*(out / name for name in names))
    write_tables(table, paths, CAPTIONS, label="tab:synapse-results")
    assert paths.markdown.read_text(encoding="utf-8") == EXPECTED_MARKDOWN
    assert paths.latex.read_text(encoding="utf-8") == EXPECTED_LATEX
    assert paths.organs_markdown.read_text(encoding="utf-8") == EXPECTED_ORGANS_MARKDOWN
    assert paths.organs_latex.read_text(encoding="utf-8") == EXPECTED_ORGANS_LATEX
    page = paths.html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and f"<caption>{CAPTIONS.main}</caption>" in page
    assert "<td><b>76.50 ± 0.5</b></td>" in page and page.count("<tbody>") == 2
    # value headers on two lines, so their columns are as narrow as their numbers
    assert "<th>Dice<br>(%) ↑</th><th>ASD<br>(voxels) ↓</th><th>p vs<br>MICD</th></tr>" in page
    assert '<th class="left">Labelled</th><th class="left">Method</th>' in page
    organs = paths.organs_html.read_text(encoding="utf-8")
    assert f"<caption>{CAPTIONS.organs}</caption>" in organs and "<th>Sp</th><th>RK</th><th>LK</th></tr>" in organs
    assert "<td><b>85.0</b></td>" in organs and "Dice" not in organs.split("<thead>")[1]
    pd.testing.assert_frame_equal(pd.read_csv(paths.csv), table, check_dtype=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_published_rows_of_the_family_and_ratio_beside_ours(table: pd.DataFrame) -> None:
    published = published_table(PUBLISHED, "synapse", "synapse", [10, 20], CLASSES)
    assert published[["ratio", "method", "source"]].values.tolist() == [
        [10, "DHC", "published"],
        [10, "CPS", "published"],
    ]
    assert published.loc[0, ["dice_mean", "dice_std", "asd_mean", "asd_std", "Sp", "RK"]].tolist() == pytest.approx(
        [90.12, 1.2, 1.05, 0.4, 95.0, 85.0]
    )
    assert math.isnan(published.loc[0, "LK"]) and "PSV" not in published.columns
    both = with_published(table, published)
    assert list(both.columns) == list(table.columns)
    # each published row right after ours of the same method (DHC), the unmatched (CPS) at the
    # end of the ratio; better everywhere, they take no bold from ours
    assert to_markdown(main_display(both), CAPTIONS.main) == EXPECTED_MARKDOWN_WITH_PUBLISHED


def test_no_published_rows_for_the_synthetic_family(table: pd.DataFrame) -> None:
    published = published_table(PUBLISHED, "synthetic", "synthetic", [10, 20], CLASSES)
    assert published.empty
    assert with_published(table, published) is table


def paired_example(differences: list[float]) -> pd.DataFrame:
    """dhc and micd at 10 %, two seeds, two classes; case i has micd - dhc = differences[i].

    The seeds and classes scatter around the case's score so that only the averaging over
    both gives the stated difference.
    """
    rows = []
    for case, difference in enumerate(differences):
        for method, base in (("dhc", 50.0), ("micd", 50.0 + difference)):
            for seed, seed_shift in ((0, -3.0), (1, 3.0)):
                for class_id, class_shift in ((1, -5.0), (2, 5.0)):
                    rows.append(
                        {
                            "dataset": "synapse",
                            "ratio": 10,
                            "method": method,
                            "seed": seed,
                            "case_id": f"case{case}",
                            "class_id": class_id,
                            "class_short": CLASSES[class_id].short,
                            "dice": base + seed_shift + class_shift,
                            "asd_voxels": 1.0,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "differences, expected",
    [
        # micd better on all six cases: the exact two-sided p is 2 / 2**6
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2 / 2**6),
        # one case worse, of rank 2: signed-rank sums 2 or less happen 3 times in 2**6
        ([1.0, -2.0, 3.0, 4.0, 5.0, 6.0], 2 * 3 / 2**6),
        # a zero difference is dropped (scipy's "wilcox"), leaving six
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2 / 2**6),
    ],
)
def test_wilcoxon_p_against_micd_has_the_known_answer(differences: list[float], expected: float) -> None:
    p = p_values_vs_micd(paired_example(differences)).set_index("method")[P_COLUMN]
    assert p["dhc"] == pytest.approx(expected)
    assert math.isnan(p["micd"])


@pytest.mark.parametrize(
    "differences",
    [
        [1.0, 2.0, 3.0, 4.0, 5.0],  # too few cases to test
        [0.0] * 8,  # all differences zero: scipy would warn and give NaN
        [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # five left after dropping zeros
    ],
)
def test_wilcoxon_p_is_nan_where_undefined(differences: list[float]) -> None:
    p = p_values_vs_micd(paired_example(differences)).set_index("method")[P_COLUMN]
    assert math.isnan(p["dhc"])


def test_wilcoxon_needs_micd_and_pairs_by_case() -> None:
    example = paired_example([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    without_micd = example[example["method"] != "micd"]
    assert p_values_vs_micd(without_micd)[P_COLUMN].isna().all()
    # micd rows listed in reverse case order still pair with the same cases
    shuffled = pd.concat([example[example["method"] == "dhc"], example[example["method"] == "micd"].iloc[::-1]])
    assert p_values_vs_micd(shuffled).set_index("method").loc["dhc", P_COLUMN] == pytest.approx(2 / 2**6)
    assert math.isnan(paired_wilcoxon_p([1.0] * (MIN_PAIRED_CASES - 1)))
    assert paired_wilcoxon_p([1.0] * MIN_PAIRED_CASES) == pytest.approx(2 / 2**MIN_PAIRED_CASES)


def test_provenance_sidecar(per_case: pd.DataFrame, tmp_path: Path) -> None:
    outputs = [tmp_path / "t.md", tmp_path / "f.png"]
    write_provenance(outputs, {"seeds": [0, 1]}, per_case, published_reference="ref.csv")
    record = json.loads(sidecar_path(outputs[1]).read_text())
    assert record["output"] == "f.png" and record["config"] == {"seeds": [0, 1]}
    assert record["published_reference"] == "ref.csv"
    assert record["runs"][0] == {"dataset": "synapse", "method": "dhc", "ratio": 10, "seed": 0}
    assert len(record["runs"]) == len(RUNS)
    assert {"micd", "pandas", "scipy", "matplotlib", "seaborn"} <= set(record["packages"])
    assert record["code_version"] and record["created"]
    assert sidecar_path(outputs[0]).is_file()


def test_the_headline_says_data_set_ratios_scores_and_seeds() -> None:
    facts = TableFacts("synthetic", "synthetic", [5, 10], [0, 1, 666], n_cases=8, has_p=True, has_published=False)
    assert main_caption(facts).startswith(
        "Synthetic data set, 5 % and 10 % labelled: test Dice (%) and ASD (voxels), mean ± std over seeds 0, 1, 666. "
    )
    one_seed = TableFacts("amos_small", "amos", [2, 5, 10], [0], 8, has_p=False, has_published=True, subject="ablation")
    assert main_caption(one_seed).startswith(
        "Data set amos_small (AMOS), ablation, 2 %, 5 % and 10 % labelled: test Dice (%) and ASD (voxels), seed 0. "
    )
    assert "Wilcoxon" not in main_caption(one_seed) and "†: as reported by DHC" in main_caption(one_seed)


def metrics_files(per_case: pd.DataFrame, folder: Path) -> list[Path]:
    """``per_case`` as one metrics.csv per run, as the workflow's metrics jobs write them."""
    paths = []
    for (ratio, method, seed), run in per_case.groupby(["ratio", "method", "seed"]):
        path = folder / f"{ratio}p" / method / f"seed{seed}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        run.to_csv(path, index=False)
        paths.append(path)
    return paths


def table_paths(folder: Path, name: str) -> TablePaths:
    main = (folder / f"{name}.{ext}" for ext in ("md", "tex", "html", "csv"))
    return TablePaths(*main, *(folder / f"{name}_per_organ.{ext}" for ext in ("md", "tex", "html")))


def test_built_tables_main_with_p_and_per_organ_with_the_organs_spelled_out(per_case, tmp_path: Path) -> None:
    paths = table_paths(tmp_path, "synapse_results")
    note = "Labelled splits: 10 % published, 20 % generated (seed 0)."
    build_tables(metrics_files(per_case, tmp_path / "runs"), "synapse", ["dhc", "micd"], paths, {}, note=note)
    main = paths.markdown.read_text(encoding="utf-8")
    caption, _, header, *_ = main.splitlines()
    assert caption.startswith(
        "Synapse data set, 10 % and 20 % labelled: test Dice (%) and ASD (voxels), mean ± std over seeds 0, 1. "
    )
    assert "Wilcoxon signed-rank test against MICD over the 2 test cases" in caption and caption.endswith(note)
    assert header == "| Labelled | Method | Dice (%) ↑ | ASD (voxels) ↓ | p vs MICD |"
    assert r"\begin{tabular}{lrrr}" in paths.latex.read_text()  # method, Dice, ASD, p: a journal's column
    organs = paths.organs_markdown.read_text(encoding="utf-8").splitlines()
    assert organs[0].startswith("Synapse data set, 10 % and 20 % labelled: test Dice (%) per organ, mean over seeds")
    synapse = [c for c in classes_for("synapse") if c.label != 0]  # every organ of the family: a dash where unscored
    assert "; ".join(f"{c.short}: {c.name}" for c in synapse) + "." in organs[0]
    assert organs[2] == "| Labelled | Method | " + " | ".join(c.short for c in synapse) + " |"
    assert r"\begin{table*}[t]" in paths.organs_latex.read_text()
    assert all(sidecar_path(path).is_file() for path in paths.all())


def test_no_p_column_without_micd(per_case, tmp_path: Path) -> None:
    paths = table_paths(tmp_path, "synapse_results")
    without_micd = per_case[per_case["method"] != "micd"]
    build_tables(metrics_files(without_micd, tmp_path / "runs"), "synapse", ["dhc"], paths, {})
    caption, _, header, *_ = paths.markdown.read_text(encoding="utf-8").splitlines()
    assert header == "| Labelled | Method | Dice (%) ↑ | ASD (voxels) ↓ |"
    assert "Wilcoxon" not in caption and "p vs" not in paths.html.read_text()
    latex = paths.latex.read_text()
    assert r"\begin{tabular}{lrr}" in latex and "$p$" not in latex
    assert P_COLUMN in pd.read_csv(paths.csv).columns  # the CSV keeps every number (here none)
