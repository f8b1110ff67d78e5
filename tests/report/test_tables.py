"""Tests of the results tables (main and per organ; Markdown, LaTeX, HTML, CSV), their captions,
published rows, Wilcoxon p-values and sidecars."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from micd.cli import main as micd
from micd.data.classes import OrganClass, classes_for
from micd.data.io import file_digest
from micd.errors import DataError
from micd.report.build import build_tables
from micd.report.captions import PublishedSource, TableFacts, main_caption, published_sources
from micd.report.published import DHC_PAPER, read_published
from micd.report.sidecar import sidecar_path, write_provenance
from micd.report.stats import MIN_PAIRED_CASES, P_COLUMN, p_values_vs_micd, paired_wilcoxon_p
from micd.report.table_formats import Captions, TablePaths, to_latex, to_markdown, write_tables
from micd.report.tables import (
    PUBLISHED_COLUMNS,
    SUMMARY_COLUMNS,
    main_display,
    main_rows,
    organ_display,
    published_table,
    results_table,
    with_published,
)

ROOT = Path(__file__).resolve().parents[2]
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
    # a file without pipeline or reported_by (DHC's tables): DHC's rows on DHC's pipeline, marked †
    assert published[PUBLISHED_COLUMNS].drop_duplicates().values.tolist() == [["dhc", DHC_PAPER, "†"]]
    both = with_published(table, published)
    assert list(both.columns) == [*SUMMARY_COLUMNS, *PUBLISHED_COLUMNS, "Sp", "RK", "LK"]
    # each published row right after ours of the same method (DHC), the unmatched (CPS) at the
    # end of the ratio; better everywhere, they take no bold from ours
    assert to_markdown(main_display(both), CAPTIONS.main) == EXPECTED_MARKDOWN_WITH_PUBLISHED


def test_no_published_rows_for_the_synthetic_family(table: pd.DataFrame) -> None:
    published = published_table(PUBLISHED, "synthetic", "synthetic", [10, 20], CLASSES)
    assert published.empty
    assert with_published(table, published) is table


TAK, STAC = "TAK (Gu et al., arXiv 2501.13470)", "STAC (Gu et al., 2024)"
# a file published since DHC, as config/published/since_dhc.csv: re-runs of DHC and the rows after it,
# on GA's pipeline from TAK's tables and on DHC's from STAC's paper
LATER = pd.DataFrame(
    [
        ("synapse", 10, "DHC (GA's pipeline)", "dice", "mean", 58.97, None, "ga", TAK),
        ("synapse", 10, "GA-CPS (GA's pipeline)", "dice", "mean", 61.0, None, "ga", TAK),
        ("synapse", 10, "DHC+STAC", "dice", "mean", 52.5, None, "dhc", STAC),
        ("synapse", 10, "DHC+STAC", "dice", "Sp", 80.0, None, "dhc", STAC),
        ("synapse", 10, "DHC (STAC's run)", "dice", "mean", 47.8, None, "dhc", STAC),
    ],
    columns=[*PUBLISHED.columns, "pipeline", "reported_by"],
)


def test_rows_of_several_published_files_each_marked_by_whose_table_and_which_pipeline(table, tmp_path) -> None:
    PUBLISHED.to_csv(tmp_path / "dhc.csv", index=False)
    LATER.to_csv(tmp_path / "later.csv", index=False)
    reference = read_published([tmp_path / "dhc.csv", tmp_path / "later.csv"])
    both = with_published(table, published_table(reference, "synapse", "synapse", [10, 20], CLASSES))
    shown = to_markdown(main_display(both), CAPTIONS.main).splitlines()
    # DHC's re-runs right after our DHC, in the files' order; the rows of methods not ours at the end
    assert [line.split(" | ")[1] for line in shown if line.startswith("| 10 %")] == [
        "DHC",
        "DHC†",
        "DHC (GA's pipeline)‡",
        "DHC (STAC's run)§",
        "MICD",
        "CPS†",
        "GA-CPS (GA's pipeline)‡",
        "DHC+STAC§",
    ]
    assert "| 10 % | DHC (GA's pipeline)‡ | 58.97 | – | – |" in shown  # no std, no ASD published
    assert both.set_index("method").loc["DHC+STAC", "Sp"] == 80.0
    # the first file's rows take †, whichever file it is
    swapped = read_published([tmp_path / "later.csv", tmp_path / "dhc.csv"])
    assert dict(zip(swapped["reported_by"], swapped["mark"], strict=True)) == {TAK: "†", STAC: "‡", DHC_PAPER: "§"}
    # the main table: all of ours, and the published rows of the methods asked for
    assert main_rows(both, None) is both
    dhc_only = main_rows(both, ["dhc"])
    assert dhc_only.loc[dhc_only["source"] == "published", "method"].tolist() == [
        "DHC",
        "DHC (GA's pipeline)",
        "DHC (STAC's run)",
    ]
    assert dhc_only.loc[dhc_only["source"] == "ours", "method"].tolist() == ["dhc", "micd", "dhc", "micd"]
    assert main_rows(both, [])["source"].eq("ours").all()
    facts = TableFacts("synapse", "synapse", [10, 20], [0, 1], 2, has_p=True, published=published_sources(both))
    assert "This table shows no published rows; the per-organ table shows them all." in main_caption(
        dataclasses.replace(facts, main_published=[], main_methods=[])
    )


def test_a_published_file_without_a_column_or_of_an_unknown_pipeline_is_refused(tmp_path) -> None:
    LATER.drop(columns="std").to_csv(tmp_path / "no_std.csv", index=False)
    with pytest.raises(DataError, match=r"no_std.csv: no column std \(a published file has dataset, "):
        read_published([tmp_path / "no_std.csv"])
    LATER.assign(pipeline="magicnet").to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(DataError, match=r"other.csv: unknown pipeline 'magicnet'; known: dhc, ga"):
        read_published([tmp_path / "other.csv"])


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
    facts = TableFacts("synthetic", "synthetic", [5, 10], [0, 1, 666], n_cases=8, has_p=True)
    assert main_caption(facts).startswith(
        "Synthetic data set, 5 % and 10 % labelled: test Dice (%) and ASD (voxels), mean ± std over seeds 0, 1, 666. "
    )
    dhc = [PublishedSource("†", DHC_PAPER, "dhc")]
    one_seed = TableFacts("amos_small", "amos", [2, 5, 10], [0], 8, has_p=False, published=dhc, subject="ablation")
    assert main_caption(one_seed).startswith(
        "Data set amos_small (AMOS), ablation, 2 %, 5 % and 10 % labelled: test Dice (%) and ASD (voxels), seed 0. "
    )
    assert "Wilcoxon" not in main_caption(one_seed)
    assert "†: as reported by DHC (Wang & Li, MICCAI 2023) on DHC's pipeline." in main_caption(one_seed)
    assert "No published results exist for this data set." in main_caption(facts)


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


PUBLISHED_FILES = [ROOT / "config" / "published" / "dhc_tables.csv", ROOT / "config" / "published" / "since_dhc.csv"]
SINCE_DHC = ["dhc", "ga_cps", "dhc_stac"]


def family_per_case(family: str, ratio: int, methods: list[str]) -> pd.DataFrame:
    """Per-case scores of ``methods`` on every organ of ``family``: 2 seeds, 3 cases, the later method higher."""
    rows = [
        {
            "dataset": family,
            "ratio": ratio,
            "method": method,
            "seed": seed,
            "case_id": f"case{case}",
            "class_id": organ.label,
            "class_short": organ.short,
            "dice": 50.0 + 5 * rank + seed + case + organ.label / 10,
            "asd_voxels": 20.0 - rank - case,
        }
        for rank, method in enumerate(methods)
        for seed in (0, 1)
        for case in range(3)
        for organ in classes_for(family)[1:]
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "family, ratio, ga_pipeline, dhc_on_ga",
    [
        ("amos", 5, "GA's own AMOS preprocessing, 96³ patches", []),  # TAK's AMOS DHC row is DHC's own
        ("synapse", 10, "MagicNet's Synapse preprocessing, 96³ patches", ["DHC‡"]),
    ],
)
def test_amos_and_synapse_tables_show_the_rows_of_both_published_files(
    tmp_path: Path, family: str, ratio: int, ga_pipeline: str, dhc_on_ga: list[str]
) -> None:
    paths = table_paths(tmp_path, f"{family}_results")
    runs = metrics_files(family_per_case(family, ratio, [*SINCE_DHC, "micd"]), tmp_path / "runs")
    build_tables(
        runs, family, [*SINCE_DHC, "micd"], paths, {}, published_csvs=PUBLISHED_FILES, main_published_methods=SINCE_DHC
    )
    caption, _, _, _, *rows = paths.markdown.read_text(encoding="utf-8").splitlines()
    # the main table: the published rows of DHC, GA-CPS and DHC+STAC, each after ours
    assert [row.split(" | ")[1] for row in rows] == [
        "DHC",
        "DHC†",
        *dhc_on_ga,
        "DHC§",
        "GA-CPS",
        "GA-CPS‡",
        "DHC+STAC",
        "DHC+STAC§",
        "MICD",
    ]
    since = pd.read_csv(PUBLISHED_FILES[1])
    means = since[(since["dataset"] == family) & (since["labeled_percent"] == ratio) & (since["class"] == "mean")]
    for method, value, mark in zip(means["method"], means["value"], means["pipeline"].map({"ga": "‡", "dhc": "§"})):
        if method.startswith(("GA-CPS", "DHC")):
            assert f"| {ratio} % | {method}{mark} | {value:.2f} | – | – |" in rows
    marks = (
        f"†: as reported by DHC (Wang & Li, MICCAI 2023) on DHC's pipeline; ‡: as reported by TAK (Gu et al., "
        f"arXiv 2501.13470) on GA's pipeline ({ga_pipeline}); §: as reported by STAC (Gu et al., 2024) on DHC's "
        "pipeline. Marked rows are published numbers (± the published std where given) and take no bold."
    )
    assert marks in caption
    selection = (
        "Of the published rows this table shows those of DHC, GA-CPS and DHC+STAC; the per-organ table shows all."
    )
    assert selection in caption
    latex = paths.latex.read_text()
    assert r"GA-CPS$^\ddagger$ & " in latex and r"DHC+STAC$^\S$ & " in latex
    assert "96$^3$ patches" in latex

    # the per-organ table and the CSV: every published row of both files at this ratio, with its mark
    dhc = pd.read_csv(PUBLISHED_FILES[0])
    dhc = dhc[(dhc["dataset"] == family) & (dhc["labeled_percent"] == ratio)]
    marked = {f"{m}†" for m in dhc["method"]} | {
        f"{m}{mark}" for m, mark in zip(means["method"], means["pipeline"].map({"ga": "‡", "dhc": "§"}))
    }
    organ_caption, _, _, _, *organ_rows = paths.organs_markdown.read_text(encoding="utf-8").splitlines()
    assert {row.split(" | ")[1] for row in organ_rows} == marked | {"DHC", "GA-CPS", "DHC+STAC", "MICD"}
    assert marks in organ_caption and "Of the published rows" not in organ_caption
    table = pd.read_csv(paths.csv)
    published = table[table["source"] == "published"]
    assert {f"{m}{mark}" for m, mark in zip(published["method"], published["mark"])} == marked
    assert set(published["reported_by"]) == {DHC_PAPER, TAK, STAC} and set(published["pipeline"]) == {"dhc", "ga"}
    ga_cps = since[(since["dataset"] == family) & (since["labeled_percent"] == ratio)]
    ga_cps = ga_cps[(ga_cps["method"] == "GA-CPS") & (ga_cps["class"] != "mean")]
    row = published.set_index(["method", "mark"]).loc[("GA-CPS", "‡")]
    assert [row[organ] for organ in ga_cps["class"]] == ga_cps["value"].tolist()
    # the provenance sidecar of each file records both published files
    record = json.loads(sidecar_path(paths.latex).read_text())
    assert record["published_files"] == [{"path": str(p), "sha256": file_digest(p)} for p in PUBLISHED_FILES]


def test_micd_tables_takes_a_single_published_file_as_before(per_case: pd.DataFrame, tmp_path: Path, capsys) -> None:
    PUBLISHED.to_csv(tmp_path / "dhc.csv", index=False)
    paths = table_paths(tmp_path, "synapse_results")
    options = [f"--table-{ext}" for ext in ("md", "tex", "html", "csv")] + [
        f"--organs-{ext}" for ext in ("md", "tex", "html")
    ]
    outputs = [part for option, path in zip(options, paths.all(), strict=True) for part in (option, str(path))]
    runs = [str(path) for path in metrics_files(per_case, tmp_path / "runs")]
    command = ["--metrics", *runs, "--family", "synapse", "--methods", "dhc", "micd", *outputs]
    micd(["tables", *command, "--published", str(tmp_path / "dhc.csv")])
    assert capsys.readouterr().err == ""
    main_table = paths.markdown.read_text(encoding="utf-8")
    caption = main_table.splitlines()[0]
    assert "| 10 % | DHC† | 90.12 ± 1.2 | 1.05 ± 0.4 | – |" in main_table and "| 10 % | CPS† |" in main_table
    assert "†: as reported by DHC (Wang & Li, MICCAI 2023) on DHC's pipeline. Marked rows" in caption
    assert "‡" not in main_table
    record = json.loads(sidecar_path(paths.csv).read_text())
    assert record["published_files"] == [
        {"path": str(tmp_path / "dhc.csv"), "sha256": file_digest(tmp_path / "dhc.csv")}
    ]
    # --published-main: the main table shows only the published rows of those methods, the per-organ table all;
    # by the old name, `micd report`, which runs `micd tables` for one more release and says so
    micd(["report", *command, "--published", str(tmp_path / "dhc.csv"), "--published-main", "dhc"])
    assert capsys.readouterr().err == "micd report is now micd tables; the old name goes in the next release\n"
    main_table = paths.markdown.read_text(encoding="utf-8")
    assert "| 10 % | DHC† |" in main_table and "CPS†" not in main_table
    assert "Of the published rows this table shows those of DHC; the per-organ table shows all." in main_table
    assert "| 10 % | CPS† |" in paths.organs_markdown.read_text(encoding="utf-8")
