"""Deterministic preprocessing, done once: DHC's clip, min-max and whole-volume resize.

Arrays are stored in (D, H, W) = (z, y, x) order, the transpose of NIfTI's (x, y, z).
Output (built in a temporary sibling and renamed into place)::

    out_dir/images/{case_id}.npy   float32 in [0, 1], shape grid
    out_dir/labels/{case_id}.npy   uint8, shape grid
    out_dir/cases.csv              shapes and spacings (all D, H, W order), CASE_COLUMNS
    out_dir/checks.csv             per-case sanity checks, CHECK_COLUMNS
    out_dir/stats.json             class voxel fractions and presence counts over all cases
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from micd.atomic import atomic_dir, atomic_write
from micd.data.convert import read_manifest
from micd.data.io import load_nifti, write_csv
from micd.errors import SettingsError

CASE_COLUMNS = (
    "case_id",
    "subset",
    "original_shape",
    "original_spacing",
    "grid",
    "grid_spacing",
)
CHECK_COLUMNS = (
    "case_id",
    "intensity_min",
    "intensity_max",
    "classes_present",
    "classes_lost",
    "ok",
)


@dataclass(frozen=True)
class _CaseResult:
    case_row: dict[str, str]
    check_row: dict[str, object]
    class_counts: np.ndarray  # voxels per class on the grid


def window_normalise(image: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Clip to the HU window, then min-max scale the clipped volume to [0, 1] (float32).

    A constant volume maps to all zeros.
    """
    clipped = np.clip(image.astype(np.float32), hu_window[0], hu_window[1])
    low, high = float(clipped.min()), float(clipped.max())
    if high <= low:
        return np.zeros_like(clipped)
    return (clipped - low) / (high - low)


def _batch(volume: np.ndarray) -> torch.Tensor:
    """A (1, 1, D, H, W) float32 tensor of a 3-D array."""
    return torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]


def resize_image(volume: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of a 3-D volume to ``grid`` (voxel centres, no corner alignment)."""
    resized = F.interpolate(_batch(volume), size=grid, mode="trilinear", align_corners=False)
    return resized[0, 0].numpy()


def resize_label(label: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label volume to ``grid``; ids are copied, never blended."""
    # float32 holds every id up to 2**24 exactly, so the round trip keeps ids exact.
    resized = F.interpolate(_batch(label), size=grid, mode="nearest-exact")
    return resized[0, 0].numpy().astype(label.dtype)


def preprocess(
    manifest: Path,
    out_dir: Path,
    grid: tuple[int, int, int],
    hu_window: tuple[float, float] = (-75.0, 275.0),
    num_classes: int = 16,
) -> None:
    """Preprocess every case of a conversion manifest to ``grid`` (D, H, W); see the module docstring.

    The canonical NIfTI files are read from the manifest's folder (``images/``, ``labels/``).
    Voxel spacing is ignored by the resize (DHC's protocol); ``cases.csv`` records the grid's
    equivalent spacing so that metrics can be given in mm.
    """
    manifest = Path(manifest)
    grid = tuple(int(n) for n in grid)  # type: ignore[assignment]
    if len(grid) != 3 or min(grid) < 1:
        raise SettingsError(f"expected a grid of three positive sizes (D, H, W), got {grid}")
    if not hu_window[0] < hu_window[1]:
        raise SettingsError(f"expected hu_window (low, high) with low < high, got {hu_window}")
    rows = read_manifest(manifest)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        results = [_preprocess_case(row, manifest.parent, tmp, grid, hu_window, num_classes) for row in rows]
        write_csv(tmp / "cases.csv", CASE_COLUMNS, (r.case_row for r in results))
        write_csv(tmp / "checks.csv", CHECK_COLUMNS, (r.check_row for r in results))
        atomic_write(
            tmp / "stats.json",
            json.dumps(_stats(results, grid, hu_window, num_classes), indent=2) + "\n",
        )


def _preprocess_case(
    row: dict[str, str],
    canonical_dir: Path,
    out_dir: Path,
    grid: tuple[int, int, int],
    hu_window: tuple[float, float],
    num_classes: int,
) -> _CaseResult:
    case_id = row["case_id"]
    image = load_nifti(canonical_dir / "images" / f"{case_id}.nii.gz", case_id)
    label = load_nifti(canonical_dir / "labels" / f"{case_id}.nii.gz", case_id)
    shape_dhw = image.data.shape[::-1]
    spacing_dhw = image.spacing[::-1]

    normalised = window_normalise(image.data.transpose(2, 1, 0), hu_window)
    # Trilinear weights sum to 1 only up to rounding: clip to stay inside [0, 1].
    grid_image = np.clip(resize_image(normalised, grid), 0.0, 1.0)
    grid_label = resize_label(label.data.transpose(2, 1, 0), grid)
    _save_npy(out_dir / "images" / f"{case_id}.npy", grid_image.astype(np.float32))
    _save_npy(out_dir / "labels" / f"{case_id}.npy", grid_label.astype(np.uint8))

    before = set(np.unique(label.data).tolist())
    after = set(np.unique(grid_label).tolist())
    low, high = float(np.nanmin(grid_image)), float(np.nanmax(grid_image))
    ok = not np.isnan(grid_image).any() and 0.0 <= low and high <= 1.0
    ok = ok and min(before) >= 0 and max(before) < num_classes
    grid_spacing = [n * s / g for n, s, g in zip(shape_dhw, spacing_dhw, grid)]
    return _CaseResult(
        case_row={
            "case_id": case_id,
            "subset": row["subset"],
            "original_shape": _joined(shape_dhw),
            "original_spacing": _joined(round(s, 4) for s in spacing_dhw),
            "grid": _joined(grid),
            "grid_spacing": _joined(round(s, 4) for s in grid_spacing),
        },
        check_row={
            "case_id": case_id,
            "intensity_min": low,
            "intensity_max": high,
            "classes_present": " ".join(str(c) for c in sorted(after)),
            "classes_lost": " ".join(str(c) for c in sorted(before - after)),
            "ok": bool(ok),
        },
        class_counts=_class_counts(grid_label, num_classes),
    )


def _stats(
    results: list[_CaseResult],
    grid: tuple[int, ...],
    hu_window: tuple[float, float],
    num_classes: int,
) -> dict:
    """Voxel fraction per class over all cases and the number of cases containing each class.

    Label values outside 0..num_classes-1 (flagged in checks.csv) count in the total only,
    so the fractions then sum to less than 1.
    """
    counts = np.sum([r.class_counts for r in results], axis=0)
    presence = np.sum([r.class_counts > 0 for r in results], axis=0)
    return {
        "num_cases": len(results),
        "grid": list(grid),
        "hu_window": list(hu_window),
        "num_classes": num_classes,
        "voxel_fraction": (counts[:num_classes] / counts.sum()).tolist(),
        "cases_with_class": presence[:num_classes].tolist(),
    }


def _class_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxels per class; the last bin counts ids outside 0..num_classes-1."""
    ids = label.ravel().astype(np.int64)
    ids = np.where((ids < 0) | (ids >= num_classes), num_classes, ids)
    return np.bincount(ids, minlength=num_classes + 1)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(path, buffer.getvalue())


def _joined(values: Iterable[object]) -> str:
    return "x".join(str(v) for v in values)
