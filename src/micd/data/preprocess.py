"""Deterministic preprocessing, done once: clip to the HU window, min-max, whole-volume resample.

Three modes:

- ``grid``: every volume resized to one fixed grid, voxel spacing ignored: DHC's AMOS
  (``code/data/preprocess_amos.py`` resizes the raw HU volume to 80x160x160; its loader then
  clips and min-max scales the resized volume);
- ``half_inplane``: every volume keeps its slice count and its in-plane size is halved: DHC's
  Synapse (its loader clips and min-max scales the volume at full size, its crops and its test
  code then halve H and W);
- ``spacing``: every volume resampled to one target voxel spacing (window first), so shapes
  differ between cases.

Images are resampled trilinearly (``F.interpolate``, no corner alignment), labels by nearest
neighbour: in the two DHC modes by ``F.interpolate``'s ``nearest`` as DHC does, in ``spacing``
by ``nearest-exact`` (voxel centres). ``cases.csv`` keeps each case's transform, so a label map
on the preprocessed grid can be put back on the source file's grid (:func:`restore_original`).

Arrays are stored in (D, H, W) = (z, y, x) order, the transpose of NIfTI's (x, y, z).
Output (built in a temporary sibling and renamed into place)::

    out_dir/images/{case_id}.npy   float32 in [0, 1]
    out_dir/labels/{case_id}.npy   uint8
    out_dir/cases.csv              shapes and spacings (all D, H, W order) and affines, CASE_COLUMNS
    out_dir/checks.csv             per-case sanity checks, CHECK_COLUMNS
    out_dir/stats.json             class voxel fractions and presence counts over all cases
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from micd.atomic import atomic_write, stage_output_dir
from micd.data.convert import format_affine, parse_affine, read_manifest
from micd.data.io import Volume, load_nifti, write_csv
from micd.data.scan_checks import check_geometry
from micd.errors import SettingsError, case_error

MODES = ("grid", "half_inplane", "spacing")
DHC_MODES = ("grid", "half_inplane")
CASE_COLUMNS = (
    "case_id",
    "subset",
    "mode",
    "original_shape",
    "original_spacing",
    "original_affine",
    "grid",
    "grid_spacing",
    "source_shape",
    "source_affine",
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


def resize_label(label: np.ndarray, grid: tuple[int, int, int], mode: str = "nearest-exact") -> np.ndarray:
    """Nearest-neighbour resize of a label volume to ``grid``; ids are copied, never blended.

    ``mode``: ``nearest-exact`` picks the source voxel whose centre is nearest; ``nearest``
    (DHC's) the one at ``floor(g * n / G)``.
    """
    # float32 holds every id up to 2**24 exactly, so the round trip keeps ids exact.
    resized = F.interpolate(_batch(label), size=grid, mode=mode)
    return resized[0, 0].numpy().astype(label.dtype)


def label_resampling(mode: str) -> str:
    """How a mode resamples labels (``F.interpolate``'s mode), also on the way back."""
    return "nearest" if mode in DHC_MODES else "nearest-exact"


def preprocess(
    manifest: Path,
    out_dir: Path,
    grid: tuple[int, int, int] | None = None,
    hu_window: tuple[float, float] = (-75.0, 275.0),
    num_classes: int = 16,
    mode: str = "grid",
    spacing: tuple[float, float, float] | None = None,
) -> None:
    """Preprocess every case of a conversion manifest; see the module docstring.

    ``mode="grid"`` resizes to ``grid`` (D, H, W); ``mode="half_inplane"`` halves H and W;
    ``mode="spacing"`` resamples to ``spacing`` (D, H, W, mm). The canonical NIfTI files are
    read from the manifest's folder (``images/``, ``labels/``).
    """
    manifest = Path(manifest)
    target = preprocessing_target(mode, grid, spacing)
    if not hu_window[0] < hu_window[1]:
        raise SettingsError(f"expected hu_window (low, high) with low < high, got {hu_window}")
    rows = read_manifest(manifest)
    # the manifest's folder holds the images it names
    with stage_output_dir(out_dir, "preprocess", [manifest.parent]) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        results = [_preprocess_case(row, manifest.parent, tmp, mode, target, hu_window, num_classes) for row in rows]
        write_csv(tmp / "cases.csv", CASE_COLUMNS, (r.case_row for r in results))
        write_csv(tmp / "checks.csv", CHECK_COLUMNS, (r.check_row for r in results))
        atomic_write(
            tmp / "stats.json",
            json.dumps(_stats(results, mode, target, hu_window, num_classes), indent=2) + "\n",
        )


def preprocessing_target(mode: str, grid, spacing) -> tuple:
    """The mode's target: a grid of three positive sizes, a spacing of three positive mm, or
    nothing (``half_inplane``)."""
    if mode not in MODES:
        raise SettingsError(f"expected preprocessing mode in {MODES}, got {mode!r}")
    if mode == "half_inplane":
        return ()
    target, what = (grid, "grid sizes") if mode == "grid" else (spacing, "voxel spacings in mm")
    if target is None or len(target) != 3 or min(target) <= 0:
        raise SettingsError(f"preprocessing mode {mode!r} needs three positive {what} (D, H, W), got {target}")
    return tuple(int(n) for n in target) if mode == "grid" else tuple(float(s) for s in target)


def target_shape(mode: str, target: tuple, shape_dhw: tuple[int, ...], spacing_dhw: tuple[float, ...]) -> tuple:
    """The preprocessed shape of a volume: the fixed grid, the slice count with half the
    in-plane size (rounded down, as DHC's ``H // 2``), or the shape at the target spacing."""
    if mode == "grid":
        return tuple(target)
    if mode == "half_inplane":
        depth, height, width = shape_dhw
        return (depth, height // 2, width // 2)
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape_dhw, spacing_dhw, target))


def preprocessing_record(data_dir: Path) -> dict | None:
    """How a preprocessed folder was made (mode, its grid or spacing, HU window), from its
    ``stats.json``; None for a folder without one. A model trained on the folder keeps this, so
    that a new scan can be preprocessed the same way (micd.inference.own_scans)."""
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        return None
    stats = json.loads(path.read_text())
    return {key: stats[key] for key in ("mode", *MODES, "hu_window") if key in stats}


@dataclass(frozen=True)
class Preprocessing:
    """How a run's training images were preprocessed: the record :func:`preprocessing_record` reads
    from a preprocessed folder, which a model file keeps and segmenting a new scan follows."""

    mode: str
    target: tuple  # the grid (D, H, W), the spacing (D, H, W mm), or () for half_inplane
    hu_window: tuple[float, float]

    @classmethod
    def from_record(cls, record: Mapping) -> "Preprocessing":
        """From a :func:`preprocessing_record` (as a model file keeps it); KeyError names the
        first key missing."""
        mode = record.get("mode")
        needed = ["mode", "hu_window", *([mode] if mode in ("grid", "spacing") else [])]
        missing = [key for key in needed if key not in record]
        if missing:
            raise KeyError(missing[0])
        target = preprocessing_target(mode, record.get("grid"), record.get("spacing"))
        low, high = (float(v) for v in record["hu_window"])
        return cls(mode, target, (low, high))

    def as_record(self) -> dict:
        return {
            "mode": self.mode,
            **({self.mode: list(self.target)} if self.target else {}),
            "hu_window": list(self.hu_window),
        }


def check_num_classes(data_dir: Path, num_classes: int, whose: str) -> None:
    """A DataError naming both counts unless the preprocessed folder's labels have ``num_classes``
    classes (its ``stats.json``; a folder without one is not checked). ``whose``: what has
    ``num_classes``, e.g. "the model file model.pt"."""
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        return
    recorded = json.loads(path.read_text()).get("num_classes")
    if recorded is not None and int(recorded) != num_classes:
        raise case_error(
            None,
            path,
            f"the data set has {recorded} classes (background included), {whose} has {num_classes}: "
            "expected the same; is it the data set, model or --family that was meant?",
        )


def check_patch_fits(
    data_dir: Path, train_ids: Iterable[str], eval_ids: Iterable[str], patch_size: Iterable[int], crops_eval: bool
) -> None:
    """A DataError naming both sizes where a patch is larger than a case's preprocessed grid and
    that cannot work: on a fixed grid (mode grid) every patch would be mostly padding; an eval
    case validated by a centre crop (``crops_eval``) must hold one whole patch. A folder without a
    ``cases.csv`` is not checked, as :func:`check_num_classes` and ``read_case_list`` do."""
    path = Path(data_dir) / "cases.csv"
    if not path.is_file():
        return
    rows, patch = read_cases(data_dir), tuple(int(p) for p in patch_size)
    checked = [(c, False) for c in train_ids] + [(c, crops_eval) for c in eval_ids]
    for case_id, must_hold in checked:
        row = rows.get(case_id)
        if row is None or not row.get("grid"):
            continue
        grid = _shape(row["grid"])
        if any(p > g for p, g in zip(patch, grid)) and (must_hold or row.get("mode") == "grid"):
            why = "the centre crop that validates it" if must_hold else "patches of a fixed grid"
            raise case_error(
                case_id,
                path,
                f"the train patch {list(patch)} is larger than the preprocessed grid {list(grid)} (D, H, W) along "
                f"an axis; expected a patch_size at most the grid for {why} (lower train.patch_size or raise "
                "preprocess.grid)",
            )


def read_cases(data_dir: Path) -> dict[str, dict[str, str]]:
    """Rows of a preprocessed folder's ``cases.csv``, by case id."""
    path = Path(data_dir) / "cases.csv"
    with open(path, newline="") as f:
        return {row["case_id"]: row for row in csv.DictReader(f)}


def case_rows(data_dir: Path, case_ids: list[str]) -> dict[str, Mapping[str, str]]:
    """The ``cases.csv`` rows of ``case_ids``; a case missing there is an error."""
    rows = read_cases(data_dir)
    for case_id in case_ids:
        if case_id not in rows:
            raise case_error(case_id, Path(data_dir) / "cases.csv", "expected a row for this case")
    return {case_id: rows[case_id] for case_id in case_ids}


def grid_affine(case_row: Mapping[str, str]) -> np.ndarray:
    """The voxel-to-world affine (NIfTI x, y, z order) of a case's preprocessed grid.

    Resampling maps voxel centres (no corner alignment): grid index g lies at original index
    (g + 0.5) * n / G - 0.5 along each axis.
    """
    original = _shape(case_row["original_shape"])[::-1]
    grid = _shape(case_row["grid"])[::-1]
    scale = np.array(original, dtype=np.float64) / np.array(grid, dtype=np.float64)
    grid_to_original = np.eye(4)
    grid_to_original[:3, :3] = np.diag(scale)
    grid_to_original[:3, 3] = 0.5 * scale - 0.5
    return _affine(case_row, "original_affine") @ grid_to_original


def restore_original(label_dhw: np.ndarray, case_row: Mapping[str, str]) -> Volume:
    """A label map on the preprocessed grid put back on the source file's voxel grid.

    Nearest-neighbour resampling to the canonical shape (for DHC's floor-indexed label grids,
    the inverse of that indexing), then the axis flips and permutations that undo the
    conversion's reorientation; the result carries the source file's affine.
    """
    grid = _shape(case_row["grid"])
    if tuple(label_dhw.shape) != grid:
        raise case_error(case_row["case_id"], None, f"expected a label map of shape {grid}, got {label_dhw.shape}")
    original_shape = _shape(case_row["original_shape"])
    if label_resampling(case_row.get("mode") or "spacing") == "nearest":
        canonical = _undo_floor_sampling(label_dhw, original_shape)
    else:
        canonical = resize_label(label_dhw, original_shape)
    canonical = canonical.transpose(2, 1, 0)
    source_affine = _affine(case_row, "source_affine")
    to_source = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.io_orientation(source_affine)
    )
    data = np.ascontiguousarray(nib.orientations.apply_orientation(canonical, to_source))
    if data.shape != _shape(case_row["source_shape"]):
        raise case_error(
            case_row["case_id"],
            None,
            f"restored shape {data.shape} differs from the source's {case_row['source_shape']}",
        )
    return Volume(data, source_affine)


def _undo_floor_sampling(label_dhw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Back to ``shape`` from a grid sampled by ``F.interpolate(mode="nearest")``, which took grid
    index g from source index ``floor(g n / G)``: each source voxel takes the grid voxel whose
    sample lies nearest, ``g = round(i G / n)``."""
    for axis, (n, g) in enumerate(zip(shape, label_dhw.shape)):
        index = np.minimum(np.floor(np.arange(n) * g / n + 0.5).astype(np.int64), g - 1)
        label_dhw = np.take(label_dhw, index, axis=axis)
    return label_dhw


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split("x"))


def _affine(case_row: Mapping[str, str], column: str) -> np.ndarray:
    text = case_row.get(column) or ""
    if len(text.split()) != 16:
        raise case_error(
            case_row.get("case_id"),
            None,
            f"cases.csv has no {column} for this case; preprocess again with this version of micd",
        )
    return parse_affine(text)


def preprocess_image(
    image: Volume, mode: str, target: tuple, hu_window: tuple[float, float]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """A canonical (RAS) image on its preprocessed grid: the (D, H, W) float array in [0, 1] and
    the grid's shape. ``target`` is :func:`preprocessing_target`'s."""
    grid = target_shape(mode, target, image.data.shape[::-1], image.spacing[::-1])
    image_dhw = image.data.transpose(2, 1, 0)
    if mode == "grid":  # DHC's AMOS: resample the raw HU values, then window the result
        return window_normalise(resize_image(image_dhw, grid), hu_window), grid
    # Trilinear weights sum to 1 only up to rounding: clip to stay inside [0, 1].
    return np.clip(resize_image(window_normalise(image_dhw, hu_window), grid), 0.0, 1.0), grid


def transform_columns(
    mode: str, image: Volume, grid: tuple[int, ...], source_shape: str, source_affine: str
) -> dict[str, str]:
    """The ``cases.csv`` columns that take a canonical ``image``'s label map on ``grid`` back to
    the source file (:func:`restore_original`); ``source_shape`` and ``source_affine`` are the
    source file's, as the conversion manifest writes them."""
    shape_dhw, spacing_dhw = image.data.shape[::-1], image.spacing[::-1]
    grid_spacing = [n * s / g for n, s, g in zip(shape_dhw, spacing_dhw, grid)]
    return {
        "mode": mode,
        "original_shape": _joined(shape_dhw),
        "original_spacing": _joined(round(s, 4) for s in spacing_dhw),
        "original_affine": format_affine(image.affine),
        "grid": _joined(grid),
        "grid_spacing": _joined(round(s, 4) for s in grid_spacing),
        "source_shape": source_shape,
        "source_affine": source_affine,
    }


def _preprocess_case(
    row: dict[str, str],
    canonical_dir: Path,
    out_dir: Path,
    mode: str,
    target: tuple,
    hu_window: tuple[float, float],
    num_classes: int,
) -> _CaseResult:
    case_id = row["case_id"]
    image_path = canonical_dir / "images" / f"{case_id}.nii.gz"
    image = load_nifti(image_path, case_id)
    check_geometry(image, case_id, image_path)  # before resampling allocates for its spacing
    label = load_nifti(canonical_dir / "labels" / f"{case_id}.nii.gz", case_id)
    grid_image, grid = preprocess_image(image, mode, target, hu_window)
    grid_label = resize_label(label.data.transpose(2, 1, 0), grid, label_resampling(mode))
    _save_npy(out_dir / "images" / f"{case_id}.npy", grid_image.astype(np.float32))
    _save_npy(out_dir / "labels" / f"{case_id}.npy", grid_label.astype(np.uint8))

    before = set(np.unique(label.data).tolist())
    after = set(np.unique(grid_label).tolist())
    low, high = float(np.nanmin(grid_image)), float(np.nanmax(grid_image))
    ok = not np.isnan(grid_image).any() and 0.0 <= low and high <= 1.0
    ok = ok and min(before) >= 0 and max(before) < num_classes
    return _CaseResult(
        case_row={
            "case_id": case_id,
            "subset": row["subset"],
            **transform_columns(mode, image, grid, row["source_shape"], row["source_affine"]),
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
    mode: str,
    target: tuple,
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
        "mode": mode,
        **({mode: list(target)} if target else {}),  # the fixed grid or the target spacing
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
