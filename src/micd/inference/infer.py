"""Predictions of a trained model on preprocessed cases, written as NIfTI label maps.

``out_dir/{case_id}.nii.gz`` is the label map on the preprocessed grid, with that grid's
affine (so it overlays the source image in a viewer); ``out_dir/original/{case_id}.nii.gz``
is the same map resampled by nearest neighbour to the source file's voxel grid, orientation
and affine, for comparison with the unprocessed label.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from micd.atomic import check_output_dir, stage_output_dir
from micd.data.io import save_nifti
from micd.data.loaders import case_paths
from micd.data.predictions import original_prediction_path, prediction_path, to_volume
from micd.data.preprocess import case_rows, check_num_classes, grid_affine, restore_original
from micd.devices import resolve_device
from micd.errors import DataError
from micd.inference.sliding_window import check_inference_settings, segment
from micd.methods import Method
from micd.model_file import method_from_record, read_model
from micd.settings import TrainSettings


@dataclass(frozen=True)
class InferenceSettings:
    """How test volumes are segmented; the defaults are the protocol's."""

    batch_size: int = 2  # windows per forward pass; does not change the result
    blending: str = "average"  # see micd.inference.sliding_window.BLENDING_MODES
    original_grid: bool = True  # also write each prediction on the source file's grid

    def __post_init__(self) -> None:
        check_inference_settings(self.batch_size, self.blending)


def write_predictions(
    segment_volume: Callable[[np.ndarray], np.ndarray],
    data_dir: Path,
    case_ids: list[str],
    out_dir: Path,
    original_grid: bool = True,
) -> None:
    """Segment each preprocessed image with ``segment_volume`` ((D, H, W) image to label map)
    and write the predictions (see the module docstring); all of them or none."""
    rows = case_rows(data_dir, case_ids)
    unrestorable = []
    with stage_output_dir(out_dir, "infer", [data_dir]) as tmp:
        for case_id in case_ids:
            labels = segment_volume(np.load(case_paths(data_dir, case_id)[0]))
            save_nifti(prediction_path(tmp, case_id), to_volume(labels, grid_affine(rows[case_id])))
            if not original_grid:
                continue
            try:
                save_nifti(original_prediction_path(tmp, case_id), restore_original(labels, rows[case_id]))
            except DataError as exc:
                unrestorable.append(f"{case_id} ({exc})")
    if unrestorable:
        # The preprocessed-grid predictions are what the metrics need, so a missing transform
        # (e.g. a folder from an older micd) costs only the original-grid copies.
        print("no original-grid prediction for: " + "; ".join(unrestorable), file=sys.stderr)


def predict_cases(
    model_path: Path,
    data_dir: Path,
    case_ids: list[str],
    out_dir: Path,
    settings: InferenceSettings = InferenceSettings(),
    device: str = "auto",
) -> None:
    """Segment every case with sliding windows of the model's training patch and stride."""
    check_output_dir(out_dir, "infer", [model_path, data_dir])
    torch_device = resolve_device(device)
    saved = read_model(model_path, torch_device)
    check_num_classes(data_dir, saved["num_classes"], f"the model file {model_path}")
    method, train = method_from_record(saved, torch_device)
    segment_volume = volume_segmenter(method, train, settings, torch_device)
    write_predictions(segment_volume, data_dir, case_ids, out_dir, settings.original_grid)


def volume_segmenter(
    method: Method, train: TrainSettings, settings: InferenceSettings, device: torch.device
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a preprocessed (D, H, W) image to its label map: sliding windows of the
    model's training patch and stride."""

    def segment_volume(image: np.ndarray) -> np.ndarray:
        labels = segment(
            method.predict,
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            train.patch_size,
            train.window_stride,
            settings.batch_size,
            settings.blending,
            device,
        )
        return labels.numpy()

    return segment_volume
