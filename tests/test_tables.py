"""Tests of the results table and its Markdown/CSV output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from micd.data.classes import OrganClass
from micd.report.tables import SUMMARY_COLUMNS, results_table, write_table

CLASSES = (
    OrganClass(0, "background", "Bg"),
    OrganClass(1, "spleen", "Sp"),
    OrganClass(2, "right kidney", "RK"),
    OrganClass(3, "left kidney", "LK"),  # never scored: its column shows a dash
)

# (ratio, method, seed) -> per class (dice, asd); cases "a"/"b" get dice + 1 / dice - 1.
RUNS = {
    (20, "MICD", 0): {1: (90.0, 1.5), 2: (70.0, 3.5)},
    (20, "DHC", 0): {1: (88.0, 2.0), 2: (72.0, 2.0)},
    (10, "MICD", 0): {1: (84.0, 1.0), 2: (70.0, 3.0)},
    (10, "MICD", 1): {1: (86.0, 2.0), 2: (66.0, 2.0)},
    (10, "DHC", 0): {1: (80.0, 2.0), 2: (60.0, 4.0)},
    (10, "DHC", 1): {1: (82.0, 3.0), 2: (62.0, 5.0)},
}

EXPECTED_MARKDOWN = """\
Table 1. Synapse, reproduced.

| Dataset | Labelled | Method | Seeds | Dice (%) ↑ | ASD (voxels) ↓ | Sp | RK | LK |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
| synapse | 10 % | DHC | 2 | 71.0 ± 1.0 | 3.5 ± 0.5 | 81.0 | 61.0 | – |
| synapse | 10 % | MICD | 2 | **76.5 ± 0.5** | **2.0 ± 0.0** | 85.0 | 68.0 | – |
| synapse | 20 % | DHC | 1 | **80.0** | **2.0** | 88.0 | 72.0 | – |
| synapse | 20 % | MICD | 1 | **80.0** | 2.5 | 90.0 | 70.0 | – |
"""


@pytest.fixture
def per_case() -> pd.DataFrame:
    rows = [
        {
            "dataset": "synapse",
            "ratio": ratio,
            "method": method,
            "seed": seed,
            "case_id": case_id,
            "class_id": class_id,
            "class_short": CLASSES[class_id].short,
            "dice": dice + offset,
            "asd_voxels": asd,
        }
        for (ratio, method, seed), scores in RUNS.items()
        for class_id, (dice, asd) in scores.items()
        for case_id, offset in (("a", 1.0), ("b", -1.0))
    ]
    return pd.DataFrame(rows)


def test_results_table(per_case: pd.DataFrame) -> None:
    table = results_table(per_case, CLASSES, method_order=["DHC", "MICD"])
    assert list(table.columns) == [*SUMMARY_COLUMNS, "Sp", "RK", "LK"]
    assert table[["ratio", "method", "n_seeds"]].values.tolist() == [
        [10, "DHC", 2],
        [10, "MICD", 2],
        [20, "DHC", 1],
        [20, "MICD", 1],
    ]
    assert table["dice_mean"].tolist() == pytest.approx([71.0, 76.5, 80.0, 80.0])
    assert table["dice_std"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert table["asd_mean"].tolist() == pytest.approx([3.5, 2.0, 2.0, 2.5])
    assert table["Sp"].tolist() == pytest.approx([81.0, 85.0, 88.0, 90.0])
    assert table["LK"].isna().all()


def test_method_order_defaults_to_first_appearance(per_case: pd.DataFrame) -> None:
    table = results_table(per_case, CLASSES)
    assert table["method"].tolist() == ["MICD", "DHC", "MICD", "DHC"]


def test_unknown_class_is_an_error(per_case: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="class ids"):
        results_table(per_case, CLASSES[:2])


def test_write_table(per_case: pd.DataFrame, tmp_path: Path) -> None:
    table = results_table(per_case, CLASSES, method_order=["DHC", "MICD"])
    markdown, csv = tmp_path / "out" / "table.md", tmp_path / "out" / "table.csv"
    write_table(table, markdown, csv, caption="Table 1. Synapse, reproduced.")
    assert markdown.read_text(encoding="utf-8") == EXPECTED_MARKDOWN
    pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_dtype=False)
    assert sorted(p.name for p in markdown.parent.iterdir()) == [
        "table.csv",
        "table.md",
    ]
