"""Tests of the figures: each file exists, opens, and has the size its layout gives."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from micd.data.classes import SYNAPSE_CLASSES
from micd.report.build import read_training
from micd.report.figures import (
    DICE_VS_RATIO_SIZE,
    class_colours,
    pixels,
    plot_dice_per_class,
    plot_dice_vs_ratio,
    plot_mask_sensitivity,
    plot_qualitative,
    plot_training_curves,
    qualitative_size,
    slice_with_most_foreground,
    training_curves_size,
)


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


def open_png(path: Path) -> tuple[int, int]:
    """The size of a PNG file, after checking that it opens in PIL and matplotlib."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
    assert plt.imread(path).shape[:2] == (size[1], size[0])
    return size


def test_plot_dice_vs_ratio_has_its_fixed_size(tmp_path: Path) -> None:
    out_png = tmp_path / "dice_vs_ratio.png"
    plot_dice_vs_ratio(per_case_frame(), out_png, method_order=["MICD", "DHC"])
    assert open_png(out_png) == pixels(DICE_VS_RATIO_SIZE)


def training_logs() -> tuple[pd.DataFrame, pd.DataFrame]:
    losses, validation = [], []
    for ratio in (10, 20):
        for method, terms in (("supervised", ["loss", "sup"]), ("micd", ["loss", "sup", "mcpc", "cfc", "cmd"])):
            for seed in (0, 1):
                for iteration in range(1, 41):
                    for k, term in enumerate(terms):
                        value = (k + 1) * 2.0 / iteration + 0.01 * seed
                        losses.append((ratio, method, seed, iteration, term, value))
                validation += [(ratio, method, seed, it, 10.0 * it / 10 + seed) for it in (10, 20, 30, 40)]
    columns = ["ratio", "method", "seed", "iteration"]
    return (
        pd.DataFrame(losses, columns=[*columns, "term", "value"]).assign(dataset="synapse"),
        pd.DataFrame(validation, columns=[*columns, "eval_mean_dice"]).assign(dataset="synapse"),
    )


def test_plot_training_curves_has_one_panel_per_method_and_ratio(tmp_path: Path) -> None:
    losses, validation = training_logs()
    out_png = tmp_path / "curves.png"
    plot_training_curves(losses, validation, out_png, method_order=["supervised", "micd"])
    assert open_png(out_png) == pixels(training_curves_size(n_methods=2, n_ratios=2))


def test_read_training_melts_every_loss_term(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"epoch": 0, "iteration": i, "lr": 0.03, "loss": 3.0, "sup": 2.0, "cmd": 1.0, "beta": 0.1, "data_s": 0.1}
        for i in (1, 2)
    ]
    (run / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "validation.csv").write_text("epoch,iteration,eval_mean_dice\n1,2,40.0\n")
    record = {"dataset": "d", "ratio": 5, "method": "micd", "seed": 0}
    losses, validation = read_training(
        [{**record, "train_log": run / "train_log.jsonl", "validation": run / "validation.csv"}]
    )
    assert sorted(losses["term"].unique()) == ["cmd", "loss", "sup"]  # not lr, beta or timings
    assert len(losses) == 6 and set(losses["method"]) == {"micd"}
    assert validation["eval_mean_dice"].tolist() == [40.0]


def phantom_case() -> tuple[np.ndarray, np.ndarray]:
    """A (D, H, W) image and label map whose slice 5 holds the most foreground."""
    image = np.random.default_rng(0).random((8, 24, 32), dtype=np.float32)
    truth = np.zeros((8, 24, 32), dtype=np.uint8)
    truth[2:7, 4:10, 4:12] = 1
    truth[5, 12:20, 10:30] = 6
    truth[3, 12:14, 10:14] = 13
    return image, truth


def test_the_mask_heat_map_spans_the_whole_grid_with_untrained_cells_blank(tmp_path: Path, monkeypatch) -> None:
    import micd.report.figures as figures

    drawn = []
    heatmap = figures.sns.heatmap
    monkeypatch.setattr(figures.sns, "heatmap", lambda table, **kw: drawn.append(table) or heatmap(table, **kw))
    grid = {f"m{round(r * 100)}_b{b}": {"mask_ratio": r, "mask_block": b} for r in (0.3, 0.5, 0.7) for b in (8, 16, 32)}
    per_case = per_case_frame().replace({"method": {"DHC": "m30_b8", "MICD": "m70_b32"}})
    cells = plot_mask_sensitivity(per_case, grid, tmp_path / "grid.csv", tmp_path / "grid.png")
    assert len(cells) == 4  # two trained cells at two labelled ratios
    for table in drawn:
        assert table.shape == (3, 3) and table.notna().sum().sum() == 2
        assert not np.isnan(table.loc[0.3, 8]) and not np.isnan(table.loc[0.7, 32]) and np.isnan(table.loc[0.5, 16])
    assert len(drawn) == 2 and Image.open(tmp_path / "grid.png").size[0] > 0


def test_slice_with_most_foreground() -> None:
    assert slice_with_most_foreground(phantom_case()[1]) == 5


def test_class_colours_are_fixed_and_distinct() -> None:
    colours = class_colours(SYNAPSE_CLASSES)
    assert list(colours) == [c.label for c in SYNAPSE_CLASSES[1:]]
    assert len(set(colours.values())) == len(colours)
    assert class_colours(SYNAPSE_CLASSES[:4]) == {k: colours[k] for k in (1, 2, 3)}


def test_plot_qualitative_shows_every_method_on_the_same_slice(tmp_path: Path) -> None:
    image, truth = phantom_case()
    shifted = np.roll(truth, 2, axis=2)
    predictions = {(ratio, method): shifted for ratio in (10, 20) for method in ("DHC", "MICD", "CPS")}
    out_png = tmp_path / "qualitative.png"
    depth = plot_qualitative(image, truth, predictions, SYNAPSE_CLASSES, out_png, title="synapse, case 1")
    assert depth == 5
    assert open_png(out_png) == pixels(qualitative_size(2, 2 + 3, len(SYNAPSE_CLASSES) - 1))
