"""Segment one's own CT scans with a trained run: ``micd segment``.

Each scan, whatever its orientation and voxel spacing, is reoriented to RAS as the conversion
does, preprocessed exactly as the run's training data were (HU window, mode, grid or spacing:
the ``preprocessing`` record its ``model.pt`` carries), segmented with the run's sliding
windows, and the label map put back on the scan's own voxel grid and affine. Output::

    out_dir/{scan}.nii.gz       uint8 label map, the scan's shape and affine
    out_dir/volumes.csv         one row per scan and organ: VOLUME_COLUMNS
    out_dir/segment.json        the model, its preprocessing and the code that segmented

``{scan}`` is the image file's name without ``.nii.gz`` or ``.nii``. The folder is built
whole in a temporary sibling and renamed into place (all scans or none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micd.atomic import atomic_write, check_output_dir, stage_output_dir
from micd.data.classes import OrganClass, classes_for
from micd.data.convert import format_affine, to_canonical
from micd.data.io import Volume, file_digest, load_nifti, save_nifti, write_csv
from micd.data.preprocess import Preprocessing, preprocess_image, restore_original, transform_columns
from micd.data.scan_checks import check_scan_to_segment
from micd.errors import DataError, case_error
from micd.model_file import method_from_record, missing_key_error, read_model
from micd.provenance import provenance

VOLUME_COLUMNS = ("scan", "label", "organ", "voxels", "volume_ml")
VOLUMES_CSV = "volumes.csv"
RECORD_JSON = "segment.json"


@dataclass(frozen=True)
class PreparedScan:
    """A scan on its preprocessed grid and the transform back to the scan's own grid."""

    image: np.ndarray  # (D, H, W) float32 in [0, 1], RAS-ordered
    case_row: dict[str, str]  # the cases.csv columns restore_original reads

    def restore(self, labels_dhw: np.ndarray) -> Volume:
        """A label map on the preprocessed grid put back on the scan's voxel grid and affine."""
        return restore_original(labels_dhw, self.case_row)


def read_model_file(model_path: Path, device) -> tuple[dict, Preprocessing, tuple[OrganClass, ...]]:
    """A ``model.pt`` checked for what segmenting needs: the read file, its preprocessing, and
    the classes of its family."""
    saved = read_model(model_path, device)
    if saved.get("preprocessing") is None:
        raise missing_key_error(model_path, "preprocessing")
    if "family" not in saved["provenance"]:
        raise missing_key_error(model_path, "provenance.family")
    classes = classes_for(saved["provenance"]["family"])
    if len(classes) != saved["num_classes"]:
        raise case_error(
            None,
            model_path,
            f"the model has {saved['num_classes']} classes, its family {saved['provenance']['family']!r} {len(classes)}",
        )
    try:
        preprocessing = Preprocessing.from_record(saved["preprocessing"])
    except KeyError as missing:
        raise missing_key_error(model_path, f"preprocessing.{missing.args[0]}") from None
    return saved, preprocessing, classes


def scan_name(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def scan_files(paths: Iterable[Path]) -> list[Path]:
    """The NIfTI files named, a folder standing for the ``.nii.gz`` and ``.nii`` files in it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and scan_name(p) != p.name)
            if not found:
                raise case_error(None, path, "expected .nii.gz or .nii images in this folder, found none")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise case_error(None, path, "no such image file or folder")
    first: dict[str, Path] = {}
    for path in files:
        earlier = first.setdefault(scan_name(path), path)
        if earlier != path:
            raise DataError(
                f"{earlier} and {path} would write the same label map {scan_name(path)}.nii.gz: rename one of them"
            )
    return files


def check_scans(scans: Sequence[Path]) -> None:
    """Every scan read and checked (micd.data.scan_checks) before the first is segmented, so a
    bad one among many stops the command before any work is done."""
    for path in scans:
        check_scan_to_segment(load_nifti(path, scan_name(path)), scan_name(path), path)


def prepare_scan(volume: Volume, name: str, preprocessing: Preprocessing) -> PreparedScan:
    """A scan (any orientation) reoriented to RAS and preprocessed as the run's training data."""
    canonical = to_canonical(volume)
    image, grid = preprocess_image(canonical, preprocessing.mode, preprocessing.target, preprocessing.hu_window)
    source_shape = "x".join(str(n) for n in volume.data.shape)
    columns = transform_columns(preprocessing.mode, canonical, grid, source_shape, format_affine(volume.affine))
    return PreparedScan(image.astype(np.float32), {"case_id": name, **columns})


def organ_volumes(name: str, labels: Volume, classes: Sequence[OrganClass]) -> list[dict[str, object]]:
    """Voxels and mL of each foreground organ in a label map (0 for one not found)."""
    voxel_ml = abs(float(np.linalg.det(labels.affine[:3, :3]))) / 1000.0
    counts = np.bincount(labels.data.ravel(), minlength=len(classes))
    return [
        {
            "scan": name,
            "label": c.label,
            "organ": c.name,
            "voxels": int(counts[c.label]),
            "volume_ml": round(int(counts[c.label]) * voxel_ml, 3),
        }
        for c in classes
        if c.label != 0
    ]


def check_out_dir(out_dir: Path, scans: Sequence[Path]) -> None:
    """The output folder is replaced whole: it must be new, empty, or an earlier output (its
    segment.json marks outputs written before micd.atomic's marker), and hold no scan."""
    check_output_dir(out_dir, "segment", scans, earlier_markers=(RECORD_JSON,))


def segment_scans(
    scans: Sequence[Path],
    out_dir: Path,
    preprocessing: Preprocessing,
    classes: Sequence[OrganClass],
    segment_volume: Callable[[np.ndarray], np.ndarray],
    record: Mapping | None = None,
) -> list[dict[str, object]]:
    """Segment each scan file with ``segment_volume`` (a preprocessed (D, H, W) image to its
    label map) and write the outputs of the module docstring; returns the volume rows."""
    check_out_dir(out_dir, scans)
    check_scans(scans)
    rows: list[dict[str, object]] = []
    with stage_output_dir(out_dir, "segment", scans, earlier_markers=(RECORD_JSON,)) as tmp:
        for path in scans:
            name = scan_name(path)
            prepared = prepare_scan(load_nifti(path, name), name, preprocessing)
            labels = prepared.restore(segment_volume(prepared.image).astype(np.uint8))
            save_nifti(tmp / f"{name}.nii.gz", labels)
            organs = organ_volumes(name, labels, classes)
            rows.extend(organs)
            print(f"{path}: {sum(r['voxels'] > 0 for r in organs)} organs found", flush=True)
        write_csv(tmp / VOLUMES_CSV, VOLUME_COLUMNS, rows)
        scans_record = [{"scan": scan_name(p), "file": str(p), "sha256": file_digest(p)} for p in scans]
        text = json.dumps(
            provenance({**(record or {}), "preprocessing": preprocessing.as_record(), "scans": scans_record}),
            indent=2,
            sort_keys=True,
        )
        atomic_write(tmp / RECORD_JSON, text + "\n")
    return rows


def segment_with_model(
    model_path: Path,
    images: Sequence[Path],
    out_dir: Path,
    batch_size: int = 2,
    blending: str = "average",
    device: str = "auto",
) -> list[dict[str, object]]:
    """``micd segment``: every image (or folder of images) segmented by a run's ``model.pt``."""
    from micd.devices import resolve_device
    from micd.inference.infer import InferenceSettings, volume_segmenter

    settings = InferenceSettings(batch_size=batch_size, blending=blending, original_grid=False)
    scans = scan_files(images)
    torch_device = resolve_device(device)
    saved, preprocessing, classes = read_model_file(model_path, torch_device)
    method, train = method_from_record(saved, torch_device)
    record = {
        "model": str(model_path),
        "model_sha256": file_digest(model_path),
        "run": {key: saved["provenance"].get(key) for key in ("dataset", "ratio", "variant", "method", "seed")},
        "inference": {"batch_size": batch_size, "blending": blending, "device": torch_device.type},
    }
    return segment_scans(
        scans, out_dir, preprocessing, classes, volume_segmenter(method, train, settings, torch_device), record
    )
