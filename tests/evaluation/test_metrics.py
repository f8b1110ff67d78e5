"""Tests of the per-class metrics (against medpy and MONAI) and of the protocol's averaging."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from medpy.metric import binary
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)
from monai.metrics.utils import get_mask_edges, get_surface_distance
from scipy import ndimage

from micd.evaluation.measures import class_means, dice_and_asd, score_case, summarise

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


# ----- MONAI -----------------------------------------------------------------------------------
# MONAI computes in float32, hence the relative tolerance.
MONAI_REL = 1e-5


def monai_scores(prediction: np.ndarray, truth: np.ndarray, spacing=None) -> dict[str, float]:
    """MONAI's Dice (%), directed ASD and symmetric HD95 of one binary mask pair."""
    y_pred, y = (torch.from_numpy(np.asarray(m, dtype=np.float32))[None, None] for m in (prediction, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty masks
        return {
            # ignore_empty=False: an empty truth scores 1 if the prediction is empty too, else 0
            "dice": 100 * compute_dice(y_pred, y, include_background=True, ignore_empty=False).item(),
            "asd": compute_average_surface_distance(
                y_pred, y, include_background=True, symmetric=False, spacing=spacing
            ).item(),
            "hd95": compute_hausdorff_distance(
                y_pred, y, include_background=True, percentile=95, spacing=spacing
            ).item(),
        }


def monai_pooled_hd95(prediction: np.ndarray, truth: np.ndarray, spacing) -> float:
    """95th percentile of MONAI's surface distances of both directions pooled (medpy's hd95)."""
    edges_prediction, edges_truth = get_mask_edges(prediction, truth)
    to_truth = get_surface_distance(edges_prediction, edges_truth, spacing=spacing)
    to_prediction = get_surface_distance(edges_truth, edges_prediction, spacing=spacing)
    return float(np.percentile(np.concatenate([to_truth, to_prediction]), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_on_random_blobs(seed: int) -> None:
    shape = (20, 36, 30)
    prediction, truth = blob(shape, seed), blob(shape, seed + 100, threshold=0.6)
    ours = dice_and_asd(prediction, truth, SPACING)
    in_voxels, in_mm = monai_scores(prediction, truth), monai_scores(prediction, truth, SPACING)
    assert ours["dice"] == pytest.approx(in_voxels["dice"], rel=MONAI_REL)
    # symmetric=False is MONAI's directed prediction -> truth ASD, medpy's asd(prediction, truth)
    assert ours["asd_voxels"] == pytest.approx(in_voxels["asd"], rel=MONAI_REL)
    assert ours["asd_mm"] == pytest.approx(in_mm["asd"], rel=MONAI_REL)
    # MONAI finds the same borders and distances; medpy's HD95 pools both directions ...
    assert ours["hd95_mm"] == pytest.approx(monai_pooled_hd95(prediction, truth, SPACING), rel=MONAI_REL)
    # ... where MONAI's takes the larger of the two directed 95th percentiles
    assert ours["hd95_mm"] != pytest.approx(in_mm["hd95"], rel=1e-3)

    metric = DiceMetric(include_background=True, ignore_empty=False)
    metric(torch.from_numpy(prediction)[None, None].float(), torch.from_numpy(truth)[None, None].float())
    assert ours["dice"] == pytest.approx(100 * metric.aggregate().item(), rel=MONAI_REL)


def test_monai_hd95_is_the_larger_directed_percentile() -> None:
    prediction, truth = blob((20, 36, 30), 7), blob((20, 36, 30), 8, threshold=0.7)
    edges_prediction, edges_truth = get_mask_edges(prediction, truth)
    directed = [
        np.percentile(get_surface_distance(a, b, spacing=SPACING), 95)
        for a, b in ((edges_prediction, edges_truth), (edges_truth, edges_prediction))
    ]
    assert monai_scores(prediction, truth, SPACING)["hd95"] == pytest.approx(max(directed), rel=MONAI_REL)


def single_voxel(shape: tuple[int, int, int], index: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[index] = True
    return mask


EMPTY = np.zeros((9, 9, 9), dtype=bool)
EDGE_CASES = {
    "single voxels apart": (single_voxel(EMPTY.shape, (0, 0, 0)), single_voxel(EMPTY.shape, (3, 4, 8))),
    "same single voxel": (single_voxel(EMPTY.shape, (4, 4, 4)), single_voxel(EMPTY.shape, (4, 4, 4))),
    "voxel next to a block": (single_voxel(EMPTY.shape, (0, 8, 8)), np.pad(np.ones((3, 3, 3), bool), 3)),
}


@pytest.mark.parametrize("case", EDGE_CASES)
def test_small_masks_match_monai_and_medpy(case: str) -> None:
    prediction, truth = EDGE_CASES[case]
    ours, monai = dice_and_asd(prediction, truth, SPACING), monai_scores(prediction, truth, SPACING)
    assert ours["dice"] == pytest.approx(monai["dice"], abs=1e-4)
    assert ours["dice"] == pytest.approx(100 * binary.dc(prediction, truth))
    assert ours["asd_mm"] == pytest.approx(monai["asd"], rel=MONAI_REL)
    assert ours["asd_mm"] == pytest.approx(binary.asd(prediction, truth, voxelspacing=SPACING))
    assert ours["asd_voxels"] == pytest.approx(monai_scores(prediction, truth)["asd"], rel=MONAI_REL)
    assert ours["hd95_mm"] == pytest.approx(binary.hd95(prediction, truth, voxelspacing=SPACING))
    assert ours["hd95_mm"] == pytest.approx(monai_pooled_hd95(prediction, truth, SPACING), rel=MONAI_REL)


@pytest.mark.parametrize("empty", ["prediction", "truth", "both"])
def test_empty_masks_take_dhc_conventions_where_monai_and_medpy_give_none(empty: str) -> None:
    block = np.pad(np.ones((3, 3, 3), bool), 3)
    prediction = EMPTY if empty in ("prediction", "both") else block
    truth = EMPTY if empty in ("truth", "both") else block
    ours, monai = dice_and_asd(prediction, truth, SPACING), monai_scores(prediction, truth, SPACING)
    # Dice agrees with MONAI's ignore_empty=False; medpy's dc gives 0 when both are empty
    assert ours["dice"] == monai["dice"] == (100.0 if empty == "both" else 0.0)
    # MONAI has no distance here (inf to an empty surface, NaN without surfaces) and medpy
    # raises; DHC's scores replace them: ASD 128 voxels for one empty mask, 0 for both
    assert not math.isfinite(monai["asd"]) and not math.isfinite(monai["hd95"])
    with pytest.raises(RuntimeError):
        binary.asd(prediction, truth)
    if empty == "both":
        assert (ours["asd_voxels"], ours["asd_mm"], ours["hd95_mm"]) == (0.0, 0.0, 0.0)
    else:
        assert ours["asd_voxels"] == 128.0 and math.isnan(ours["asd_mm"]) and math.isnan(ours["hd95_mm"])


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
