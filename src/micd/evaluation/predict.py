"""Predictions of a trained model on preprocessed cases, written as NIfTI label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from micd.atomic import atomic_dir
from micd.data.io import Volume, save_nifti
from micd.data.loaders import case_paths
from micd.engine import TrainSettings, resolve_device
from micd.evaluation.inference import segment
from micd.methods import Method, build_method


def load_model(model_path: Path, device: torch.device) -> tuple[Method, TrainSettings]:
    saved = torch.load(model_path, map_location=device, weights_only=False)
    method_name = saved["provenance"]["method"]
    settings = TrainSettings.from_dict(saved["train_settings"])
    method = build_method(
        method_name, saved["method_settings"], saved["num_classes"], settings.n_filters, settings.dropout
    )
    method.load_state_dict(saved["method_state"])
    return method.to(device).eval(), settings


def prediction_path(prediction_dir: Path, case_id: str) -> Path:
    return Path(prediction_dir) / f"{case_id}.nii.gz"


def to_volume(label_map: np.ndarray) -> Volume:
    """A (D, H, W) label map on the preprocessed grid as a NIfTI volume in (x, y, z) order."""
    return Volume(np.ascontiguousarray(label_map.transpose(2, 1, 0)).astype(np.uint8), np.eye(4))


def from_volume(volume: Volume) -> np.ndarray:
    return np.asarray(volume.data).transpose(2, 1, 0)


def predict_cases(model_path: Path, data_dir: Path, case_ids: list[str], out_dir: Path, device: str = "auto") -> None:
    """Segment every case with sliding windows (the protocol's patch and stride) into ``out_dir``."""
    torch_device = resolve_device(device)
    method, settings = load_model(model_path, torch_device)
    with atomic_dir(out_dir) as tmp:
        for case_id in case_ids:
            volume = torch.from_numpy(np.load(case_paths(data_dir, case_id)[0]))
            labels = segment(method.predict, volume, settings.patch_size, settings.window_stride, device=torch_device)
            save_nifti(prediction_path(tmp, case_id), to_volume(labels.numpy()))
