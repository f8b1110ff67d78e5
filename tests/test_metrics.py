"""Tests of the per-class metrics (against medpy) and of the protocol's averaging."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from medpy.metric import binary
from scipy import ndimage

from micd.evaluation.metrics import class_means, dice_and_asd, score_case, summarise

SPACING = (2.5, 0.8, 1.1)


def blob(shape: tuple[int, int, int], seed: int, threshold: float = 0.55) -> np.ndarray:
    """A random smooth blob (maybe in pieces, maybe touching the volume's faces)."""
    noise = np.random.default_rng(seed).random(shape)
    smooth = ndimage.gaussian_filter(noise, sigma=2.5)
    return smooth > np.quantile(smooth, threshold)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_medpy_on_random_blobs(seed: int) -> None:
    shape = (20, 36, 30)
    prediction, truth = blob(shape, seed), blob(shape, seed + 100, threshold=0.6)
    scores = dice_and_asd(prediction, truth, SPACING)
    assert scores["dice"] == pytest.approx(100 * binary.dc(prediction, truth))
    # DHC calls medpy's directed asd(prediction, truth) without spacing.
    assert scores["asd_voxels"] == pytest.approx(binary.asd(prediction, truth))
    assert scores["asd_mm"] == pytest.approx(binary.asd(prediction, truth, voxelspacing=SPACING))
    assert scores["hd95_mm"] == pytest.approx(binary.hd95(prediction, truth, voxelspacing=SPACING))
    assert all(type(value) is float for value in scores.values())


def test_small_masks_in_a_large_volume_match_medpy() -> None:
    # Exercises the bounding-box crop: the masks sit away from the volume's faces.
    prediction = np.zeros((40, 50, 60), dtype=bool)
    truth = np.zeros_like(prediction)
    prediction[10:18, 20:31, 5:12] = True
    truth[12:20, 22:35, 8:16] = True
    truth[30:33, 40:44, 50:55] = True
    scores = dice_and_asd(prediction, truth, SPACING)
    assert scores["asd_voxels"] == pytest.approx(binary.asd(prediction, truth))
    assert scores["asd_mm"] == pytest.approx(binary.asd(prediction, truth, voxelspacing=SPACING))
    assert scores["hd95_mm"] == pytest.approx(binary.hd95(prediction, truth, voxelspacing=SPACING))


def test_asd_is_directed_from_prediction_to_truth() -> None:
    truth = np.zeros((30, 30, 30), dtype=bool)
    truth[5:25, 5:25, 5:25] = True
    prediction = np.zeros_like(truth)
    prediction[12:18, 12:18, 12:18] = True
    asd = dice_and_asd(prediction, truth)["asd_voxels"]
    assert asd == pytest.approx(binary.asd(prediction, truth))
    assert asd != pytest.approx(binary.asd(truth, prediction))
    assert asd != pytest.approx(binary.assd(prediction, truth))


def test_without_spacing_only_voxel_metrics() -> None:
    assert set(dice_and_asd(blob((10, 12, 14), 3), blob((10, 12, 14), 4))) == {
        "dice",
        "asd_voxels",
    }


@pytest.mark.parametrize("empty", ["prediction", "truth"])
def test_empty_in_one_mask(empty: str) -> None:
    mask = blob((10, 12, 14), 5)
    masks = {"prediction": mask, "truth": mask}
    masks[empty] = np.zeros_like(mask)
    scores = dice_and_asd(masks["prediction"], masks["truth"], SPACING)
    assert scores["dice"] == 0
    assert scores["asd_voxels"] == 128
    assert math.isnan(scores["asd_mm"]) and math.isnan(scores["hd95_mm"])


def test_empty_in_both_masks() -> None:
    empty = np.zeros((6, 7, 8), dtype=bool)
    assert dice_and_asd(empty, empty, SPACING) == {
        "dice": 100,
        "asd_voxels": 0,
        "asd_mm": 0,
        "hd95_mm": 0,
    }
    assert dice_and_asd(empty, empty) == {"dice": 100, "asd_voxels": 0}


def test_empty_penalties_are_configurable() -> None:
    empty = np.zeros((6, 7, 8), dtype=bool)
    full = np.ones_like(empty)
    assert dice_and_asd(empty, full, empty_asd=99.0)["asd_voxels"] == 99.0
    assert dice_and_asd(empty, empty, both_empty_dice=1.0)["dice"] == 1.0


def test_identical_masks() -> None:
    mask = blob((16, 18, 20), 6)
    assert dice_and_asd(mask, mask, SPACING) == {
        "dice": 100,
        "asd_voxels": 0,
        "asd_mm": 0,
        "hd95_mm": 0,
    }


def test_single_voxels() -> None:
    prediction = np.zeros((9, 9, 9), dtype=bool)
    truth = np.zeros_like(prediction)
    prediction[0, 0, 0] = True
    assert dice_and_asd(prediction, prediction, SPACING)["asd_mm"] == 0
    truth[3, 4, 0] = True
    scores = dice_and_asd(prediction, truth, SPACING)
    assert scores["dice"] == 0
    assert scores["asd_voxels"] == pytest.approx(5.0)
    assert scores["asd_mm"] == pytest.approx(math.hypot(3 * 2.5, 4 * 0.8))
    assert scores["hd95_mm"] == pytest.approx(binary.hd95(prediction, truth, voxelspacing=SPACING))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_and_asd(np.ones((2, 2, 2)), np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="spacing"):
        dice_and_asd(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 1.0))


def test_score_case_scores_each_foreground_class() -> None:
    truth = np.zeros((12, 12, 12), dtype=np.int16)
    truth[1:5, 1:5, 1:5] = 1
    truth[6:10, 6:10, 6:10] = 2
    prediction = truth.copy()
    prediction[prediction == 2] = 0  # class 2 missed, class 3 absent from both
    rows = score_case(prediction, truth, num_classes=4, spacing=SPACING)
    assert [r["class_id"] for r in rows] == [1, 2, 3]
    assert rows[0] == {
        "class_id": 1,
        "dice": 100,
        "asd_voxels": 0,
        "asd_mm": 0,
        "hd95_mm": 0,
    }
    assert (rows[1]["dice"], rows[1]["asd_voxels"]) == (0, 128)
    assert (rows[2]["dice"], rows[2]["asd_voxels"]) == (100, 0)
    assert score_case(prediction, truth, 3, empty_asd=50.0)[1]["asd_voxels"] == 50.0


def per_case_frame() -> pd.DataFrame:
    """Two seeds of one run, two cases, two classes, and a background row to ignore."""
    rows = [
        # seed, case, class, dice, asd
        (0, "a", 1, 80.0, 2.0),
        (0, "b", 1, 60.0, 4.0),
        (0, "a", 2, 50.0, 10.0),
        (0, "b", 2, 30.0, 6.0),
        (0, "a", 0, 99.0, 0.0),
        (1, "a", 1, 90.0, 1.0),
        (1, "b", 1, 70.0, 3.0),
        (1, "a", 2, 40.0, 128.0),
        (1, "b", 2, 20.0, 8.0),
    ]
    frame = pd.DataFrame(rows, columns=["seed", "case_id", "class_id", "dice", "asd_voxels"])
    frame["class_short"] = frame["class_id"].map({0: "Bg", 1: "Sp", 2: "RK"})
    frame["asd_mm"] = frame["asd_voxels"] * 2
    frame.loc[
        (frame["seed"] == 1) & (frame["case_id"] == "a") & (frame["class_id"] == 2),
        "asd_mm",
    ] = np.nan
    return frame.assign(dataset="synapse", ratio=20, method="MICD")


def test_summarise_averages_cases_then_classes() -> None:
    summary = summarise(per_case_frame())
    assert list(summary.columns) == [
        "dataset",
        "ratio",
        "method",
        "seed",
        "mean_dice",
        "mean_asd",
        "mean_asd_mm",
    ]
    assert summary["seed"].tolist() == [0, 1]
    # seed 0: classes (70, 3) and (40, 8); seed 1: (80, 2) and (30, 68)
    assert summary["mean_dice"].tolist() == pytest.approx([55.0, 55.0])
    assert summary["mean_asd"].tolist() == pytest.approx([5.5, 35.0])
    # NaN mm values are skipped: seed 1 class RK is case b only (16 mm)
    assert summary["mean_asd_mm"].tolist() == pytest.approx([11.0, (4.0 + 16.0) / 2])


def test_class_means_per_class() -> None:
    means = class_means(per_case_frame())
    assert means["class_short"].tolist() == ["Sp", "RK", "Sp", "RK"]
    assert means["dice"].tolist() == pytest.approx([70.0, 40.0, 80.0, 30.0])


def test_summarise_rejects_incomplete_or_repeated_rows() -> None:
    frame = per_case_frame()
    with pytest.raises(ValueError, match="every case"):
        summarise(frame.drop(index=3))
    with pytest.raises(ValueError, match="repeats"):
        summarise(pd.concat([frame, frame.iloc[[0]]]))
    with pytest.raises(ValueError, match="lacks"):
        summarise(frame.drop(columns="case_id"))
