"""Tests of the results tables (Markdown, LaTeX, HTML, CSV), published rows, Wilcoxon p-values and sidecars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from micd.data.classes import OrganClass
from micd.report.sidecar import sidecar_path, write_provenance
from micd.report.stats import MIN_PAIRED_CASES, P_COLUMN, p_values_vs_micd, paired_wilcoxon_p
from micd.report.tables import (
    SUMMARY_COLUMNS,
    TablePaths,
    published_table,
    results_table,
    to_latex,
    to_markdown,
    with_published,
    write_table,
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

CAPTION = "Table 1. Synapse, reproduced."

# 10 %: micd wins Dice, ASD and both classes. 20 %: Dice ties (80.00 each), so neither is bold.
EXPECTED_MARKDOWN = """\
Table 1. Synapse, reproduced.

| Labelled | Method | Seeds | Dice (%) ↑ | ASD (voxels) ↓ | p vs MICD | Sp | RK | LK |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| 10 % | DHC | 2 | 71.00 ± 1.0 | 3.50 ± 0.5 | – | 81.0 | 61.0 | – |
| 10 % | MICD | 2 | **76.50 ± 0.5** | **2.00 ± 0.0** | – | **85.0** | **68.0** | – |
| 20 % | DHC | 1 | 80.00 | **2.00** | – | 88.0 | **72.0** | – |
| 20 % | MICD | 1 | 80.00 | 2.50 | – | **90.0** | 70.0 | – |
"""

EXPECTED_LATEX = r"""\begin{table}[t]
\centering
\caption{Table 1. Synapse, reproduced.}
\begin{tabular}{llrrrrrrr}
\toprule
Labelled & Method & Seeds & Dice (\%) $\uparrow$ & ASD (voxels) $\downarrow$ & p vs MICD & Sp & RK & LK \\
\midrule
10 \% & DHC & 2 & 71.00 $\pm$ 1.0 & 3.50 $\pm$ 0.5 & -- & 81.0 & 61.0 & -- \\
10 \% & MICD & 2 & \textbf{76.50 $\pm$ 0.5} & \textbf{2.00 $\pm$ 0.0} & -- & \textbf{85.0} & \textbf{68.0} & -- \\
\midrule
20 \% & DHC & 1 & 80.00 & \textbf{2.00} & -- & 88.0 & \textbf{72.0} & -- \\
20 \% & MICD & 1 & 80.00 & 2.50 & -- & \textbf{90.0} & 70.0 & -- \\
\bottomrule
\end{tabular}
\end{table}
"""

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

| Labelled | Method | Seeds | Dice (%) ↑ | ASD (voxels) ↓ | p vs MICD | Sp | RK | LK |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| 10 % | DHC | 2 | 71.00 ± 1.0 | 3.50 ± 0.5 | – | 81.0 | 61.0 | – |
| 10 % | DHC (published) | – | 90.12 ± 1.2 | 1.05 ± 0.4 | – | 95.0 | 85.0 | – |
| 10 % | MICD | 2 | **76.50 ± 0.5** | **2.00 ± 0.0** | – | **85.0** | **68.0** | – |
| 10 % | CPS (published) | – | 33.55 | 41.20 | – | – | – | – |
| 20 % | DHC | 1 | 80.00 | **2.00** | – | 88.0 | **72.0** | – |
| 20 % | MICD | 1 | 80.00 | 2.50 | – | **90.0** | 70.0 | – |
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


def test_markdown_and_latex_in_the_papers_layout_with_the_best_in_bold(table: pd.DataFrame) -> None:
    assert to_markdown(table, CAPTION) == EXPECTED_MARKDOWN
    assert to_latex(table, CAPTION) == EXPECTED_LATEX


def test_write_table_writes_every_format(table: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = TablePaths(out / "t.md", out / "t.tex", out / "t.html", out / "t.csv")
    write_table(table, paths, caption=CAPTION)
    assert paths.markdown.read_text(encoding="utf-8") == EXPECTED_MARKDOWN
    assert paths.latex.read_text(encoding="utf-8") == EXPECTED_LATEX
    page = paths.html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and f"<caption>{CAPTION}</caption>" in page
    assert "<td><b>76.50 ± 0.5</b></td>" in page and page.count("<tbody>") == 2
    # value headers on two lines, so their columns are as narrow as their numbers
    assert "<th>Dice<br>(%) ↑</th><th>ASD<br>(voxels) ↓</th><th>p vs<br>MICD</th><th>Sp</th>" in page
    assert '<th class="left">Labelled</th><th class="left">Method</th>' in page
    pd.testing.assert_frame_equal(pd.read_csv(paths.csv), table, check_dtype=False)
    assert sorted(p.name for p in out.iterdir()) == ["t.csv", "t.html", "t.md", "t.tex"]


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
    assert to_markdown(both, CAPTION) == EXPECTED_MARKDOWN_WITH_PUBLISHED


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
