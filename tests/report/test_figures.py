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


def train_log_line(iteration: int, losses: dict, diagnostics: dict, **extra) -> dict:
    """A line of train_log.jsonl as the engine writes it."""
    return {"epoch": 0, "iteration": iteration, "lr": 0.03, "losses": losses, "diagnostics": diagnostics, **extra}


def test_read_training_melts_every_loss_term(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    losses = {"loss": 3.0, "sup": 2.0, "cmd": 1.0}
    lines = [train_log_line(i, losses, {"beta": 0.1, "confident": 0.5}, data_s=0.1) for i in (1, 2)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "validation.csv").write_text("epoch,iteration,eval_mean_dice\n1,2,40.0\n")
    record = {"dataset": "d", "ratio": 5, "method": "micd", "seed": 0}
    losses, validation = read_training(
        [{**record, "train_log": run / "train_log.jsonl", "validation": run / "validation.csv"}]
    )
    assert sorted(losses["term"].unique()) == ["cmd", "loss", "sup"]  # not lr, diagnostics or timings
    assert len(losses) == 6 and set(losses["method"]) == {"micd"}
    assert validation["eval_mean_dice"].tolist() == [40.0]


def test_read_training_reads_the_flat_lines_of_a_log_from_before_losses_were_nested(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    flat = {"epoch": 0, "lr": 0.03, "loss": 3.0, "sup": 2.0, "cmd": 1.0, "beta": 0.1, "data_s": 0.1, "compute_s": 1}
    lines = [{**flat, "iteration": 1}, train_log_line(2, {"loss": 3.0, "sup": 2.0, "cmd": 1.0}, {"beta": 0.1})]
    (run / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "validation.csv").write_text("epoch,iteration,eval_mean_dice\n1,2,40.0\n")
    record = {"dataset": "d", "ratio": 5, "method": "micd", "seed": 0}
    losses, _ = read_training([{**record, "train_log": run / "train_log.jsonl", "validation": run / "validation.csv"}])
    assert sorted(zip(losses["iteration"], losses["term"])) == [
        (i, term) for i in (1, 2) for term in ("cmd", "loss", "sup")
    ]


def test_a_log_with_skipped_steps_draws_its_training_curves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    finite = {"loss": 3.0, "sup": 2.0, "cps": 1.0}
    skipped = dict.fromkeys(finite)  # the engine logs a skipped step's non-finite terms as null
    lines = [
        train_log_line(i, skipped, {"beta": None}, skipped="non-finite loss (nan)")
        if i in (3, 4)
        else train_log_line(i, {k: v / i for k, v in finite.items()}, {"beta": 0.1})
        for i in range(1, 9)
    ]
    (run / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "validation.csv").write_text("epoch,iteration,eval_mean_dice\n0,8,12.5\n")
    record = {"dataset": "d", "ratio": 5, "method": "dhc", "seed": 0}
    losses, validation = read_training(
        [{**record, "train_log": run / "train_log.jsonl", "validation": run / "validation.csv"}]
    )
    assert sorted(losses["iteration"].unique()) == [1, 2, 5, 6, 7, 8]
    out_png = tmp_path / "curves.png"
    plot_training_curves(losses, validation, out_png, method_order=["dhc"])
    assert open_png(out_png) == pixels(training_curves_size(n_methods=1, n_ratios=1))


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
    # image over ground truth in the first column, then three methods; two organs on slice 5
    assert open_png(out_png) == pixels(qualitative_size(2, 1 + 3, 2))


@pytest.mark.parametrize("ratios", [(10,), (10, 20), (5, 10, 20)])
def test_the_qualitative_figure_leaves_no_panel_empty(ratios) -> None:
    from micd.report.figures import qualitative_figure

    image, truth = phantom_case()
    predictions = {(ratio, method): truth for ratio in ratios for method in ("DHC", "MICD")}
    figure, _ = qualitative_figure(image, truth, predictions, SYNAPSE_CLASSES, title="synapse, case 1")
    panels = figure.axes
    assert len(panels) == 2 + len(predictions) and all(ax.images for ax in panels)
    columns = 2 + (len(ratios) == 1)  # one column for image and truth, two beside a single row
    cells = {
        (row, column)
        for ax in panels
        for row in ax.get_subplotspec().rowspan
        for column in ax.get_subplotspec().colspan
    }
    assert cells == {(row, column) for row in range(len(ratios)) for column in range(columns + 1)}
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["spleen", "liver"]
    plt.close(figure)


def test_any_image_with_a_label_map_over_it_shows_every_organ_once() -> None:
    from micd.report.figures import label_maps_figure

    image, truth = phantom_case()
    figure, slices = label_maps_figure(
        image, {"reference": truth, "other": np.roll(truth, 1, axis=1)}, SYNAPSE_CLASSES, "a scan", caption="its source"
    )
    assert slices == [2, 3, 5]  # 3 adds organ 13 to slice 5's two, then the farthest slice with an organ
    assert len(figure.axes) == 3 * 3 and all(ax.images for ax in figure.axes)
    assert [len(ax.images) for ax in figure.axes[:3]] == [1, 1, 1]  # the image alone on top
    from matplotlib.legend import Legend
    from matplotlib.text import Text

    (legend,) = figure.findobj(Legend)  # in the panels' subfigure, above the caption's
    assert [t.get_text() for t in legend.get_texts()] == ["spleen", "liver", "left adrenal gland"]
    assert "its source" in [text.get_text() for text in figure.findobj(Text)]
    plt.close(figure)


def srgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB colours in [0, 1] (last axis)."""
    rgb = np.asarray(rgb, dtype=float)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = linear @ to_xyz.T / to_xyz.sum(axis=1)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def ciede2000(lab1, lab2) -> np.ndarray:
    """The CIEDE2000 colour difference (Sharma, Wu and Dalal 2005) of CIELAB colours."""
    (l1, a1, b1), (l2, a2, b2) = (
        np.moveaxis(np.asarray(lab1, float), -1, 0),
        np.moveaxis(np.asarray(lab2, float), -1, 0),
    )
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25**7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    no_hue = c1 * c2 == 0
    dh = np.where(no_hue, 0, (h2 - h1 + 180) % 360 - 180)
    d_hue = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh / 2))
    h_sum = h1 + h2
    h_mean = np.where(
        no_hue, h_sum, np.where(np.abs(h1 - h2) > 180, (h_sum + np.where(h_sum < 360, 360, -360)) / 2, h_sum / 2)
    )
    l_mean, c_bar = (l1 + l2) / 2, (c1 + c2) / 2
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_bar, 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2)))) * 2 * np.sqrt(c_bar**7 / (c_bar**7 + 25**7))
    dl, dc, dhh = (l2 - l1) / s_l, (c2 - c1) / s_c, d_hue / s_h
    return np.sqrt(dl**2 + dc**2 + dhh**2 + r_t * dc * dhh)


def test_ciede2000_gives_the_published_differences() -> None:
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0)]
    pairs += [((50, 2.5, 0), (73, 25, -18), 27.1492), ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082)]
    for lab1, lab2, expected in pairs:  # Sharma, Wu and Dalal's test data
        assert ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4)


CT_GREYS = (0.0, 0.25, 0.5, 0.75, 1.0)  # black fat and air .. soft tissue .. white bone, in the window


def as_seen(colour, grey: float, kind: str | None) -> np.ndarray:
    """An organ colour over a CT grey, in CIELAB, with normal sight (``kind`` None) or not."""
    from micd.report.figures import over_grey

    drawn = over_grey(colour, grey)
    return srgb_to_lab(drawn if kind is None else colour_blind(drawn, kind))


@pytest.mark.parametrize("kind", [None, "deuteranopia"])
def test_organs_stay_apart_over_every_ct_grey_and_for_red_green_colour_blindness(kind) -> None:
    from matplotlib.colors import to_rgb

    from micd.data.classes import AMOS_CLASSES
    from micd.report.figures import LETTER_COLOUR

    colours = class_colours(AMOS_CLASSES)
    white = srgb_to_lab(to_rgb(LETTER_COLOUR))
    for grey in CT_GREYS:
        seen = {label: as_seen(colour, grey, kind) for label, colour in colours.items()}
        closest = min(ciede2000(seen[a], seen[b]) for a in seen for b in seen if a < b)
        assert closest >= 9.9, (grey, kind)
        grey_lab = srgb_to_lab(colour_blind((grey,) * 3, kind) if kind else (grey,) * 3)
        assert min(ciede2000(lab, grey_lab) for lab in seen.values()) >= 12, (grey, kind)  # seen on the CT
    plain = [srgb_to_lab(colour_blind(c, kind) if kind else c) for c in colours.values()]
    assert min(ciede2000(lab, white) for lab in plain) >= 20  # apart from the orientation letters


def zero_series_frame() -> pd.DataFrame:
    """per_case_frame with every Dice of DHC 0, as the lower bound scores at the default budget."""
    frame = per_case_frame()
    frame.loc[frame["method"] == "DHC", "dice"] = 0.0
    return frame


def pixels_of(figure: plt.Figure, ax: plt.Axes, colour) -> int:
    """How many pixels of ``colour`` the rendered figure has inside ``ax``."""
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3] / 255
    x0, y0, x1, y1 = ax.get_window_extent().extents  # display pixels, origin at the bottom left
    region = image[int(image.shape[0] - y1) : int(image.shape[0] - y0), int(x0) : int(x1)]
    return int((np.abs(region - np.asarray(colour)[:3]).max(axis=-1) < 0.05).sum())


def test_a_series_of_zeros_shows_its_colour_in_every_bar_panel() -> None:
    from micd.report.figures import dice_per_class_figure

    figure = dice_per_class_figure(zero_series_frame(), SYNAPSE_CLASSES, method_order=["MICD", "DHC"])
    legend = figure.legends[0]
    colours = {
        text.get_text(): handle.get_facecolor() for text, handle in zip(legend.get_texts(), legend.legend_handles)
    }
    for ax in figure.axes:
        assert ax.get_ylim()[0] < 0  # 0 lies above the bottom spine
        assert pixels_of(figure, ax, colours["DHC"]) > 100, ax.get_title()
        assert pixels_of(figure, ax, colours["MICD"]) > 100
    plt.close(figure)


def test_a_series_of_zeros_lies_whole_above_the_spine_in_dice_against_ratio() -> None:
    from micd.report.figures import OKABE_ITO, dice_vs_ratio_figure

    figure = dice_vs_ratio_figure(zero_series_frame(), method_order=["MICD", "DHC"])
    ax = figure.axes[0]
    zeros = [line for line in ax.lines if len(line.get_ydata()) and not np.any(line.get_ydata())]
    assert zeros and all(not line.get_clip_on() for line in zeros)
    assert ax.get_ylim()[0] < 0
    assert pixels_of(figure, ax, matplotlib_rgb(OKABE_ITO[1])) > 300  # the line at 0 and its markers, whole
    plt.close(figure)


def matplotlib_rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def test_the_validation_axis_is_scaled_to_its_dice() -> None:
    from micd.report.figures import training_curves_figure

    losses, validation = training_logs()
    validation["eval_mean_dice"] = validation["eval_mean_dice"] * 7 / validation["eval_mean_dice"].max()
    figure = training_curves_figure(losses, validation, method_order=["supervised", "micd"])
    twins = [ax for ax in figure.axes if ax.get_ylabel() == "validation Dice (%)"]
    assert len(twins) == 4
    for twin in twins:
        low, high = twin.get_ylim()
        assert low < 0 and 7 < high <= 10  # not 0 to 100: a Dice of 7 would lie on the spine
    plt.close(figure)


def colour_blind(colour: str, kind: str) -> np.ndarray:
    """``colour`` as a deuteranope or protanope sees it (Machado et al. 2009, severity 1), sRGB."""
    from matplotlib.colors import to_rgb

    matrix = {
        "deuteranopia": [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.01182, 0.04294, 0.968881],
        ],
        "protanopia": [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ],
    }[kind]
    srgb = np.asarray(to_rgb(colour))
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(np.asarray(matrix) @ linear, 0, 1)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


@pytest.mark.parametrize("kind", ["deuteranopia", "protanopia"])
def test_methods_and_loss_terms_stay_apart_for_red_green_colour_blindness(kind) -> None:
    from micd.report.figures import OKABE_ITO, term_colours

    colours = list(term_colours([f"term{i}" for i in range(len(OKABE_ITO))]).values())  # the total's black too
    seen = [colour_blind(c, kind) for c in colours]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(seen) for b in seen[:i])
    assert closest > 0.18  # tab10's green and red, which the curves had, come to 0.12 and 0.10


@pytest.mark.slow
def test_every_figure_is_also_written_as_pdf(tmp_path: Path) -> None:
    """Every figure in PNG (300 dpi) and PDF from one drawing; the same numbers give the same PDF."""
    losses, validation = training_logs()
    image, truth = phantom_case()
    grid = {"m30_b8": {"mask_ratio": 0.3, "mask_block": 8}, "m70_b32": {"mask_ratio": 0.7, "mask_block": 32}}
    draw = {
        "dice_per_class": lambda out: plot_dice_per_class(per_case_frame(), SYNAPSE_CLASSES, out),
        "dice_vs_ratio": lambda out: plot_dice_vs_ratio(per_case_frame(), out),
        "training_curves": lambda out: plot_training_curves(losses, validation, out),
        "mask_sensitivity": lambda out: plot_mask_sensitivity(
            per_case_frame().replace({"method": {"DHC": "m30_b8", "MICD": "m70_b32"}}), grid, tmp_path / "g.csv", out
        ),
        "qualitative": lambda out: plot_qualitative(
            image, truth, {(10, "DHC"): truth}, SYNAPSE_CLASSES, out, title="synapse, case 1"
        ),
    }
    for name, plot in draw.items():
        for copy in ("a", "b"):
            plot([tmp_path / copy / f"{name}.png", tmp_path / copy / f"{name}.pdf"])
        pdf = (tmp_path / "a" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"/Type /Page" in pdf and pdf.rstrip().endswith(b"%%EOF"), name
        assert pdf == (tmp_path / "b" / f"{name}.pdf").read_bytes(), f"{name}: the PDF carries a date"
        with Image.open(tmp_path / "a" / f"{name}.png") as png:
            assert png.format == "PNG" and round(png.info["dpi"][0]) == 300, name


def test_a_figure_of_an_unknown_format_writes_nothing(tmp_path: Path) -> None:
    from micd.report.figures import save_figure

    figure = plt.figure()
    with pytest.raises(ValueError, match=r"f\.jpg: a figure file ends in one of \.png, \.pdf, \.svg"):
        save_figure(figure, [tmp_path / "f.png", tmp_path / "f.jpg"])
    assert list(tmp_path.iterdir()) == []


def title_fits_one_line(figure: plt.Figure) -> str:
    """The figure's title, after checking that it is one line within the figure's width."""
    title = figure.get_suptitle()
    figure.canvas.draw()
    extent = figure._suptitle.get_window_extent(figure.canvas.get_renderer())
    assert "\n" not in title and extent.width <= figure.get_figwidth() * figure.dpi, title
    return title


@pytest.mark.parametrize("methods", [("DHC",), ("DHC", "MICD", "CPS", "UA-MT")])
def test_the_qualitative_title_is_one_line_and_its_caption_is_not_in_the_figure(methods) -> None:
    from micd.report.figures import qualitative_figure

    image, truth = phantom_case()
    predictions = {(ratio, method): truth for ratio in (10, 20) for method in methods}
    title = "Synthetic phantom (not a patient), test case amos_0041, seed 0, 1, 666"
    figure, depth = qualitative_figure(image, truth, predictions, SYNAPSE_CLASSES, title=title)
    assert title_fits_one_line(figure) == f"{title}, axial slice {depth}"
    assert not any("radiological" in text.get_text() for text in figure.findobj(plt.Text))
    plt.close(figure)


def test_the_training_curves_title_is_one_line_and_the_legend_holds_no_caption() -> None:
    from micd.report.figures import training_curves_figure

    losses, validation = training_logs()
    figure = training_curves_figure(losses, validation, method_order=["supervised", "micd"])
    assert title_fits_one_line(figure) == "Training curves, synapse"
    (legend,) = figure.legends
    assert legend.get_title().get_text() == ""
    assert [t.get_text() for t in legend.get_texts()][-2:] == ["total loss", "validation Dice"]
    assert not any("running mean" in text.get_text() for text in figure.findobj(plt.Text))
    plt.close(figure)
