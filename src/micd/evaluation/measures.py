"""Per-class segmentation metrics and the protocol's averaging, as DHC evaluates.

DHC (github.com/xmed-lab/DHC, ``code/evaluate_Ntimes.py``) scores every test case and
every foreground class ``i`` with medpy::

    dice = metric.binary.dc(pred == i, label == i) * 100
    asd  = metric.binary.asd(pred == i, label == i)      # no voxelspacing

so its ASD is medpy's *directed* ``asd(result=prediction, reference=truth)``: the mean
distance from each border voxel of the prediction to the nearest border voxel of the
truth, in voxels of the evaluation grid (not the symmetric ``assd``). A class empty in
exactly one of the two scores Dice 0 and ASD 128; empty in both scores ASD 0 and, in
DHC's code, Dice ``1``: on the percent scale most likely a slip for 100, which we default
to (``docs/protocol.md``, Inference and metrics); ``both_empty_dice=1.0`` copies DHC
literally. Scores are averaged over cases per class, then over foreground
classes; the spread over runs is ``np.std`` (population, ddof=0) of each run's mean.

Surface distances are computed with scipy.ndimage the way medpy does (border = mask
minus its erosion by the 6-connected cross, outside the volume counting as background;
Euclidean distance transform with the voxel spacing as ``sampling``). With a spacing we also
give ``asd_mm`` (the same directed ASD in mm) and ``hd95_mm``, medpy's ``hd95``: the 95th
percentile of the distances of both directions pooled. MONAI finds the same borders and
distances (``get_mask_edges`` without spacing, ``get_surface_distance``), so its directed
ASD and its Dice equal ours, but its ``compute_hausdorff_distance(percentile=95)`` is the
larger of the two directed 95th percentiles, which differs from medpy's pooled one. MONAI
returns NaN or inf where a mask is empty; DHC's penalties above replace those here, and the
mm metrics are NaN when exactly one mask is empty. ``tests/evaluation/test_metrics.py`` checks all of
this against medpy and MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

DHC_EMPTY_ASD = 128.0
"""ASD (voxels) DHC gives a class empty in exactly one of prediction and truth."""

RUN_KEYS: tuple[str, ...] = ("dataset", "ratio", "method", "seed")
"""Columns naming one training run in the long per-case tables."""

PER_CASE_COLUMNS: tuple[str, ...] = (
    *RUN_KEYS,
    "case_id",
    "class_id",
    "class_short",
    "dice",
    "asd_voxels",
)
"""Required columns of a per-case per-class table (``asd_mm``, ``hd95_mm`` optional)."""

OPTIONAL_METRICS: tuple[str, ...] = ("asd_mm", "hd95_mm")

METRICS_CSV_COLUMNS: tuple[str, ...] = (*PER_CASE_COLUMNS, *OPTIONAL_METRICS)
"""Columns of a run's ``metrics.csv``, in order."""


def _check_same_shape(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")


def _border(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-connected neighbour outside it (medpy's border)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _surface_distances(
    source_border: np.ndarray,
    target_border: np.ndarray,
    sampling: Sequence[float] | None,
) -> np.ndarray:
    """Distance from each source border voxel to the nearest target border voxel."""
    distance = ndimage.distance_transform_edt(~target_border, sampling=sampling)
    return distance[source_border]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every voxel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        indices = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(indices[0], indices[-1] + 1))
    return tuple(box)


def dice_percent(prediction: np.ndarray, truth: np.ndarray, both_empty_dice: float = 100.0) -> float:
    """Dice (%) of two binary masks; ``both_empty_dice`` when both are empty."""
    sizes = np.count_nonzero(prediction) + np.count_nonzero(truth)
    if sizes == 0:
        return float(both_empty_dice)
    return float(200.0 * np.count_nonzero(prediction & truth) / sizes)


def mean_foreground_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean Dice (%) over the foreground classes of one label-map pair (model selection)."""
    return float(np.mean([dice_percent(prediction == c, truth == c) for c in range(1, num_classes)]))


def dice_and_asd(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    *,
    empty_asd: float = DHC_EMPTY_ASD,
    both_empty_dice: float = 100.0,
) -> dict:
    """Dice (%) and surface distances of one binary class mask pair, as DHC scores them.

    Returns ``dice`` and ``asd_voxels`` (directed prediction → truth ASD on the voxel
    grid, medpy's ``asd(prediction, truth)``); with ``spacing`` (per axis, e.g. mm) also
    ``asd_mm`` (the same directed ASD in physical units) and ``hd95_mm`` (medpy's
    symmetric ``hd95``). A class empty in exactly one mask scores Dice 0, ASD
    ``empty_asd`` and NaN for the mm metrics; empty in both, Dice ``both_empty_dice``
    and 0 for every distance.
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    _check_same_shape(prediction, truth)
    if spacing is not None and len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {spacing} does not have one value per axis of {prediction.shape}")

    predicted_any, truth_any = prediction.any(), truth.any()
    if predicted_any and truth_any:
        dice = dice_percent(prediction, truth)
        # Every border voxel lies in the union's bounding box, and the erosion treats
        # the outside of the box as background just like the outside of the volume,
        # so the crop gives the same distances with much cheaper transforms.
        box = _bounding_box(prediction | truth)
        predicted_border, truth_border = _border(prediction[box]), _border(truth[box])
        asd = _surface_distances(predicted_border, truth_border, None).mean()
        scores = {"dice": dice, "asd_voxels": float(asd)}
        if spacing is None:
            return scores
        to_truth = _surface_distances(predicted_border, truth_border, spacing)
        to_prediction = _surface_distances(truth_border, predicted_border, spacing)
        scores["asd_mm"] = float(to_truth.mean())
        both_ways = np.concatenate([to_truth, to_prediction])
        scores["hd95_mm"] = float(np.percentile(both_ways, 95))
        return scores

    if predicted_any or truth_any:
        dice, asd, physical = 0.0, float(empty_asd), float("nan")
    else:
        dice, asd, physical = float(both_empty_dice), 0.0, 0.0
    scores = {"dice": dice, "asd_voxels": asd}
    if spacing is not None:
        scores["asd_mm"] = scores["hd95_mm"] = physical
    return scores


def score_case(
    prediction: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: tuple[float, float, float] | None = None,
    **convention: float,
) -> list[dict]:
    """Scores of every foreground class ``1..num_classes-1`` of one label map pair.

    Each dict holds ``class_id`` and the metrics of :func:`dice_and_asd`, to which
    ``convention`` (``empty_asd``, ``both_empty_dice``) is passed on.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    _check_same_shape(prediction, truth)
    return [
        {
            "class_id": class_id,
            **dice_and_asd(prediction == class_id, truth == class_id, spacing, **convention),
        }
        for class_id in range(1, num_classes)
    ]


def _metric_columns(per_case: pd.DataFrame) -> list[str]:
    return [
        "dice",
        "asd_voxels",
        *(c for c in OPTIONAL_METRICS if c in per_case.columns),
    ]


def class_means(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean over cases of each run's per-class metrics (foreground classes only).

    Input: the long per-case table (:data:`PER_CASE_COLUMNS`, plus ``asd_mm`` and
    ``hd95_mm`` if present). Output: one row per run and class, columns ``RUN_KEYS``,
    ``class_id``, ``class_short`` and the metrics. Background rows (``class_id`` 0) are
    dropped; NaN mm values (a class empty in one mask) are skipped. Raises
    ``ValueError`` when a column is missing, a (run, case, class) row is repeated, or a
    run does not score every one of its cases on every class, since the protocol's
    means would then be biased.
    """
    missing = [c for c in PER_CASE_COLUMNS if c not in per_case.columns]
    if missing:
        raise ValueError(f"per-case table lacks columns {missing}")
    foreground = per_case[per_case["class_id"] != 0]
    if foreground.duplicated([*RUN_KEYS, "case_id", "class_id"]).any():
        raise ValueError("per-case table repeats a (run, case, class) row")
    grid = foreground.groupby(list(RUN_KEYS), sort=False)[["case_id", "class_id"]].nunique()
    rows = foreground.groupby(list(RUN_KEYS), sort=False).size()
    incomplete = rows != grid["case_id"] * grid["class_id"]
    if incomplete.any():
        raise ValueError(f"runs do not score every case on every class: {list(rows.index[incomplete])}")
    return foreground.groupby([*RUN_KEYS, "class_id", "class_short"], sort=True, as_index=False)[
        _metric_columns(foreground)
    ].mean()


def summarise(per_case: pd.DataFrame) -> pd.DataFrame:
    """The protocol's score of each run: mean over cases per class, then over classes.

    Input: the long per-case table (see :func:`class_means`). Output: one row per
    ``(dataset, ratio, method, seed)``, sorted, with ``mean_dice`` and ``mean_asd``
    (voxels), plus ``mean_asd_mm`` / ``mean_hd95_mm`` when the input has mm columns.
    """
    per_class = class_means(per_case)
    metrics = _metric_columns(per_class)
    summary = per_class.groupby(list(RUN_KEYS), sort=True, as_index=False)[metrics].mean()
    names = {
        "dice": "mean_dice",
        "asd_voxels": "mean_asd",
        **{c: f"mean_{c}" for c in OPTIONAL_METRICS},
    }
    return summary.rename(columns=names)


def dhc_centre_crop(volume: np.ndarray, patch_size: Sequence[int]) -> np.ndarray:
    """The patch at the centre of a (D, H, W) volume, as DHC's ``CenterCrop`` takes it.

    Offsets are ``round((n - p) / 2)`` of the unpadded size; a volume no larger than the patch
    along any axis is first zero-padded by ``(p - n) // 2 + 3`` on both sides of every axis where
    that is positive (DHC's rule, which for a size equal to the patch shifts the crop by 3).
    """
    shape = volume.shape
    if any(n < p for n, p in zip(shape, patch_size)):
        raise ValueError(f"volume {shape} is smaller than the validation patch {tuple(patch_size)}")
    offsets = [int(round((n - p) / 2.0)) for n, p in zip(shape, patch_size)]
    if any(n <= p for n, p in zip(shape, patch_size)):
        padding = [max((p - n) // 2 + 3, 0) for n, p in zip(shape, patch_size)]
        volume = np.pad(volume, [(pad, pad) for pad in padding])
    return volume[tuple(slice(o, o + p) for o, p in zip(offsets, patch_size))]


def dhc_validation_dice(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean foreground Dice (%) as DHC's training scripts validate: per class
    ``(2 tp + 1e-8) / (2 tp + fp + fn + 1e-8 + 1e-8)``, so a class absent from both scores 50."""
    scores = []
    for c in range(1, num_classes):
        p, t = prediction == c, truth == c
        tp = np.count_nonzero(p & t)
        scores.append((2 * tp + 1e-8) / (np.count_nonzero(p) + np.count_nonzero(t) + 2e-8))
    return float(100 * np.mean(scores))
