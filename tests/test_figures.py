"""Tests of the per-class Dice figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from micd.data.classes import SYNAPSE_CLASSES
from micd.report.figures import plot_dice_per_class


def per_case_frame(dataset: str = "synapse") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {
            "dataset": dataset,
            "ratio": ratio,
            "method": method,
            "seed": seed,
            "case_id": f"case{case}",
            "class_id": organ.label,
            "class_short": organ.short,
            "dice": float(rng.uniform(40, 95)),
            "asd_voxels": float(rng.uniform(0, 20)),
        }
        for ratio in (10, 20)
        for method in ("DHC", "MICD")
        for seed in (0, 1)
        for case in range(4)
        for organ in SYNAPSE_CLASSES[1:]
    ]
    return pd.DataFrame(rows)


def test_plot_dice_per_class_writes_a_png(tmp_path: Path) -> None:
    out_png = tmp_path / "figures" / "dice_per_class.png"
    plot_dice_per_class(per_case_frame(), SYNAPSE_CLASSES, out_png, method_order=["MICD", "DHC"])
    assert out_png.stat().st_size > 10_000
    with Image.open(out_png) as image:
        image.verify()
    with Image.open(out_png) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 600 and height > 400
    assert [p.name for p in out_png.parent.iterdir()] == ["dice_per_class.png"]


def test_plot_dice_per_class_wants_one_dataset(tmp_path: Path) -> None:
    two = pd.concat([per_case_frame("synapse"), per_case_frame("amos")])
    with pytest.raises(ValueError, match="one dataset"):
        plot_dice_per_class(two, SYNAPSE_CLASSES, tmp_path / "x.png")
