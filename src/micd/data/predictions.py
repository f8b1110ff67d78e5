"""The prediction files: written by the infer stage and segment, read by metrics and the figures.

``{case_id}.nii.gz`` is a label map on the preprocessed grid; ``original/{case_id}.nii.gz`` the
same map on the source file's grid. Label maps are (D, H, W) arrays in memory and (x, y, z)
NIfTI volumes on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from micd.data.io import Volume

ORIGINAL_GRID_DIR = "original"


def prediction_path(prediction_dir: Path, case_id: str) -> Path:
    return Path(prediction_dir) / f"{case_id}.nii.gz"


def original_prediction_path(prediction_dir: Path, case_id: str) -> Path:
    return Path(prediction_dir) / ORIGINAL_GRID_DIR / f"{case_id}.nii.gz"


def to_volume(label_map: np.ndarray, affine: np.ndarray) -> Volume:
    """A (D, H, W) label map as a uint8 NIfTI volume in (x, y, z) order."""
    return Volume(np.ascontiguousarray(label_map.transpose(2, 1, 0)).astype(np.uint8), affine)


def from_volume(volume: Volume) -> np.ndarray:
    return np.asarray(volume.data).transpose(2, 1, 0)
