"""Conversion of an extracted archive to one canonical layout, whatever the data set.

Layouts: ``amos`` (AMOS 2022 and the synthetic set: ``dataset.json``, ``imagesTr``/``labelsTr``,
``imagesVa``/``labelsVa``) and ``synapse`` (``RawData/Training/img/img0001.nii.gz`` and
``label/label0001.nii.gz``; case ids are DHC's ``0001``). Either may sit one folder down
(``amos22/``, ``RawData/``).

Output (built in a temporary sibling and renamed into place, so a failure leaves nothing)::

    out_dir/images/{case_id}.nii.gz   image, int16 (or float32), closest canonical RAS orientation
    out_dir/labels/{case_id}.nii.gz   label, uint8, same orientation and affine
    out_dir/manifest.csv              one row per case, columns MANIFEST_COLUMNS
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from micd.atomic import stage_output_dir
from micd.data.classes import classes_for
from micd.data.io import (
    Volume,
    file_digest,
    load_nifti,
    save_nifti,
    write_csv,
)
from micd.data.scan_checks import check_geometry, check_training_image
from micd.errors import SettingsError, case_error

AFFINE_TOLERANCE_MM = 1e-3
MANIFEST_COLUMNS = (
    "case_id",
    "subset",
    "modality",
    "source_image",
    "source_label",
    "shape",
    "spacing",
    "source_shape",
    "source_affine",
    "image_sha256",
    "label_sha256",
)
MODALITIES = ("all", "ct")
LAYOUTS = ("amos", "synapse")
_SUBSETS = (("Tr", "train"), ("Va", "validation"))
_CASE_ID = re.compile(r"^amos_(\d{4})$")
_MAX_CT_ID = 500  # AMOS: ids up to 500 are CT, 501..600 MRI
_SYNAPSE_IMAGE = re.compile(r"^img(\d{4})\.nii(\.gz)?$")


@dataclass(frozen=True)
class SourceCase:
    """One image/label pair found in the archive."""

    case_id: str
    subset: str
    modality: str
    image: Path
    label: Path  # where the label should be; it may be missing


def convert_archive(archive_dir: Path, out_dir: Path, layout: str = "amos", modality: str = "all") -> Path:
    """Validate and convert every labelled case of an extracted archive (``layout`` in LAYOUTS).

    ``modality="ct"`` keeps only CT cases (AMOS ids up to 500), ``"all"`` keeps all.
    Returns the path of ``out_dir/manifest.csv``; bad input raises DataError.
    """
    archive_dir, out_dir = Path(archive_dir), Path(out_dir)
    if layout == "amos":
        root = locate_root(archive_dir, "dataset.json")
        check_dataset_json(root / "dataset.json")
        cases, num_labels = find_cases(root, modality), len(classes_for("amos"))
    elif layout == "synapse":
        root = locate_root(archive_dir, "Training/img")
        cases, num_labels = find_synapse_cases(root), len(classes_for("synapse"))
    else:
        raise SettingsError(f"expected layout in {LAYOUTS}, got {layout!r}")
    with stage_output_dir(out_dir, "convert", [archive_dir]) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        rows = [_convert_case(case, root, tmp, num_labels) for case in cases]
        write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)
    return out_dir / "manifest.csv"


def locate_root(archive_dir: Path, marker: str) -> Path:
    """The folder holding ``marker``: ``archive_dir`` itself or one of its subfolders (e.g. ``amos22/``)."""
    if (archive_dir / marker).exists():
        return archive_dir
    found = sorted(
        sub for sub in archive_dir.glob("*") if sub.is_dir() and sub.name != "__MACOSX" and (sub / marker).exists()
    )
    if len(found) != 1:
        raise case_error(
            None,
            archive_dir,
            f"expected {marker} in this folder or in exactly one subfolder, found it in {len(found)}; "
            "is this the extracted archive of the configured layout?",
        )
    return found[0]


def check_dataset_json(path: Path) -> None:
    """Check that ``dataset.json`` is readable and declares labels "0".."15" (names are not matched:
    AMOS spells some oddly)."""
    try:
        labels = json.loads(Path(path).read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise case_error(None, path, f"expected a readable JSON file with a 'labels' mapping ({exc})") from exc
    num_labels = len(classes_for("amos"))
    expected = {str(i) for i in range(num_labels)}
    if not isinstance(labels, dict) or set(labels) != expected:
        found = sorted(labels, key=str) if isinstance(labels, dict) else labels
        raise case_error(None, path, f"expected labels '0'..'{num_labels - 1}', found {found}")


def find_cases(archive_dir: Path, modality: str = "all") -> list[SourceCase]:
    """Pair images and labels by case id in ``imagesTr``/``labelsTr`` and ``imagesVa``/``labelsVa``."""
    if modality not in MODALITIES:
        raise SettingsError(f"expected modality in {MODALITIES}, got {modality!r}")
    cases: list[SourceCase] = []
    seen: dict[str, Path] = {}  # case id -> its image, across imagesTr/ and imagesVa/
    for tag, subset in _SUBSETS:
        images = _nifti_files(archive_dir / f"images{tag}")
        labels = _nifti_files(archive_dir / f"labels{tag}")
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise case_error(
                orphans[0],
                labels[orphans[0]],
                f"label without an image in images{tag}/ (all such: {orphans})",
            )
        for case_id, image in sorted(images.items()):
            _refuse_twice(case_id, seen.setdefault(case_id, image), image)
            case_modality = _modality_of(case_id, image)
            label = labels.get(case_id, archive_dir / f"labels{tag}" / image.name)
            if modality in ("all", case_modality):
                cases.append(SourceCase(case_id, subset, case_modality, image, label))
    if not cases:
        raise case_error(
            None,
            archive_dir,
            f"expected {modality} cases in imagesTr/ or imagesVa/, found none",
        )
    return cases


def find_synapse_cases(root: Path) -> list[SourceCase]:
    """Pair ``Training/img/imgNNNN`` with ``Training/label/labelNNNN``; every case is CT and in ``train``."""
    cases = []
    _nifti_files(root / "Training" / "label")  # a label twice (.nii and .nii.gz) is refused there
    for name, image in sorted(_nifti_files(root / "Training" / "img").items()):
        match = _SYNAPSE_IMAGE.match(image.name)
        if match is None:
            raise case_error(name, image, "expected an image named like img0001.nii.gz")
        case_id = match.group(1)
        label = root / "Training" / "label" / image.name.replace("img", "label", 1)
        cases.append(SourceCase(case_id, "train", "ct", image, label))
    if not cases:
        raise case_error(None, root / "Training" / "img", "expected images named like img0001.nii.gz, found none")
    return cases


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a ``manifest.csv`` written by :func:`convert_archive`."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise case_error(
                None,
                path,
                f"expected manifest columns {list(MANIFEST_COLUMNS)}, missing {sorted(missing)}",
            )
        return list(reader)


def _nifti_files(directory: Path) -> dict[str, Path]:
    """Case id -> file for the NIfTI files of a directory, skipping dot-files (macOS junk); one
    case id twice (``.nii`` and ``.nii.gz``) is an error naming both files."""
    if not directory.is_dir():
        return {}
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        for suffix in (".nii.gz", ".nii"):
            if name.endswith(suffix):
                case_id = name[: -len(suffix)]
                _refuse_twice(case_id, files.setdefault(case_id, path), path)
                break
    return files


def _refuse_twice(case_id: str, first: Path, second: Path) -> None:
    """One case id in two files would pair one file's image with the other's label."""
    if first != second:
        raise case_error(
            case_id,
            second,
            f"the case is also in {first}; expected each case id once (in one of .nii/.nii.gz, in one of "
            "imagesTr/imagesVa): remove one of the two files",
        )


def _modality_of(case_id: str, path: Path) -> str:
    match = _CASE_ID.match(case_id)
    if match is None:
        raise case_error(case_id, path, "expected a file named like amos_0001.nii.gz")
    return "ct" if int(match.group(1)) <= _MAX_CT_ID else "mri"


def _convert_case(case: SourceCase, archive_dir: Path, out_dir: Path, num_labels: int) -> dict[str, str]:
    """Validate one case, write its canonical image and label, and return its manifest row."""
    if not case.label.is_file():
        raise case_error(
            case.case_id,
            case.label,
            "label file missing; expected one label per image (restore it or remove the image)",
        )
    image = load_nifti(case.image, case.case_id)
    label = load_nifti(case.label, case.case_id)
    _validate(case, image, label, num_labels)
    source_shape, source_affine = image.data.shape, image.affine

    image, label = to_canonical(image), to_canonical(label)
    image_dtype = np.int16 if _fits_int16(image.data) else np.float32
    save_nifti(
        out_dir / "images" / f"{case.case_id}.nii.gz",
        Volume(image.data.astype(image_dtype), image.affine),
    )
    save_nifti(
        out_dir / "labels" / f"{case.case_id}.nii.gz",
        Volume(label.data.astype(np.uint8), label.affine),
    )
    return {
        "case_id": case.case_id,
        "subset": case.subset,
        "modality": case.modality,
        "source_image": case.image.relative_to(archive_dir).as_posix(),
        "source_label": case.label.relative_to(archive_dir).as_posix(),
        "shape": "x".join(str(n) for n in image.data.shape),
        "spacing": "x".join(str(round(s, 4)) for s in image.spacing),
        "source_shape": "x".join(str(n) for n in source_shape),
        "source_affine": format_affine(source_affine),
        "image_sha256": file_digest(case.image),
        "label_sha256": file_digest(case.label),
    }


def format_affine(affine: np.ndarray) -> str:
    """A 4x4 affine as 16 space-separated numbers, row by row (a CSV cell)."""
    return " ".join(repr(float(v)) for v in np.asarray(affine, dtype=np.float64).ravel())


def parse_affine(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()], dtype=np.float64).reshape(4, 4)


def _validate(case: SourceCase, image: Volume, label: Volume, num_labels: int) -> None:
    """Raise DataError unless image and label match and hold sensible values."""
    check_training_image(image, case.case_id, case.image, case.modality)
    check_geometry(label, case.case_id, case.label)
    if image.data.shape != label.data.shape:
        raise case_error(
            case.case_id,
            case.label,
            f"expected the image's shape {image.data.shape}, found {label.data.shape}",
        )
    if not np.allclose(image.affine, label.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        raise case_error(
            case.case_id,
            case.label,
            f"expected the image's affine (within {AFFINE_TOLERANCE_MM} mm):\n"
            f"{np.round(image.affine, 4)}\nfound:\n{np.round(label.affine, 4)}",
        )
    if np.issubdtype(image.data.dtype, np.floating):
        n_bad = int((~np.isfinite(image.data)).sum())
        if n_bad:
            raise case_error(
                case.case_id,
                case.image,
                f"expected finite intensities, found {n_bad} NaN or infinite voxels",
            )
    values = np.unique(label.data)
    bad = values[(values < 0) | (values >= num_labels) | (values != np.round(values))]
    if bad.size:
        raise case_error(
            case.case_id,
            case.label,
            f"expected integer label values in 0..{num_labels - 1}, found {bad[:10].tolist()}",
        )


def to_canonical(volume: Volume) -> Volume:
    """Reorient by axis flips/permutations only to the closest RAS+ orientation."""
    ornt = nib.orientations.io_orientation(volume.affine)
    data = np.ascontiguousarray(nib.orientations.apply_orientation(volume.data, ornt))
    return Volume(data, volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.data.shape))


def _fits_int16(data: np.ndarray) -> bool:
    if not np.issubdtype(data.dtype, np.integer):
        return False
    info = np.iinfo(np.int16)
    return bool(data.size == 0 or (data.min() >= info.min and data.max() <= info.max))
