"""Tests of the AMOS-archive conversion (micd.data.convert) and the atomic directory helper."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from micd.atomic import atomic_dir
from micd.data.convert import MANIFEST_COLUMNS, convert_archive
from micd.data.io import Volume, load_nifti, save_nifti
from micd.errors import DataError


def _manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "archive")


def test_converts_synthetic_archive(archive: Path, tmp_path: Path) -> None:
    manifest = convert_archive(archive, tmp_path / "canonical")
    assert manifest == tmp_path / "canonical" / "manifest.csv"
    rows = _manifest(manifest)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [(r["case_id"], r["subset"], r["modality"]) for r in rows] == [
        ("amos_0001", "train", "ct"),
        ("amos_0002", "train", "ct"),
        ("amos_0003", "validation", "ct"),
    ]
    for row in rows:
        source_image, source_label = (
            archive / row["source_image"],
            archive / row["source_label"],
        )
        assert row["source_label"] == f"labels{source_image.parent.name[-2:]}/{row['case_id']}.nii.gz"
        assert row["image_sha256"] == hashlib.sha256(source_image.read_bytes()).hexdigest()
        assert row["label_sha256"] == hashlib.sha256(source_label.read_bytes()).hexdigest()

        image = nib.load(tmp_path / "canonical" / "images" / f"{row['case_id']}.nii.gz")
        label = nib.load(tmp_path / "canonical" / "labels" / f"{row['case_id']}.nii.gz")
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.affine, label.affine)
        assert row["shape"] == "x".join(map(str, image.shape))
        assert row["spacing"] == "x".join(str(round(float(s), 4)) for s in nib.affines.voxel_sizes(image.affine))
        # The synthetic archive is stored L-P-S: canonical RAS flips the first two axes.
        flipped = np.asanyarray(nib.load(source_label).dataobj)[::-1, ::-1, :]
        np.testing.assert_array_equal(np.asanyarray(label.dataobj), flipped)
    assert _leftovers(tmp_path) == ["canonical"]


def test_ignores_macos_junk_and_dot_files(archive: Path, tmp_path: Path) -> None:
    (archive / "__MACOSX" / "imagesTr").mkdir(parents=True)
    (archive / "__MACOSX" / "imagesTr" / "._amos_0001.nii.gz").write_bytes(b"junk")
    (archive / "imagesTr" / "._amos_0001.nii.gz").write_bytes(b"junk")
    (archive / "labelsTr" / ".DS_Store").write_bytes(b"junk")
    rows = _manifest(convert_archive(archive, tmp_path / "canonical"))
    assert [r["case_id"] for r in rows] == ["amos_0001", "amos_0002", "amos_0003"]


def test_modality_ct_drops_mri_cases(archive: Path, tmp_path: Path) -> None:
    for folder in ("imagesVa", "labelsVa"):
        (archive / folder / "amos_0003.nii.gz").rename(archive / folder / "amos_0540.nii.gz")
    rows = _manifest(convert_archive(archive, tmp_path / "all"))
    assert [(r["case_id"], r["modality"]) for r in rows][-1] == ("amos_0540", "mri")
    rows = _manifest(convert_archive(archive, tmp_path / "ct", modality="ct"))
    assert [r["case_id"] for r in rows] == ["amos_0001", "amos_0002"]


def test_dataset_json_needs_sixteen_labels(archive: Path, tmp_path: Path) -> None:
    meta = json.loads((archive / "dataset.json").read_text())
    del meta["labels"]["15"]
    (archive / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="dataset.json"):
        convert_archive(archive, tmp_path / "canonical")
    assert _leftovers(tmp_path) == []


# Each damage function breaks case amos_0002 and returns the file the message must name.
def _corrupt(archive: Path) -> str:
    path = archive / "imagesTr" / "amos_0002.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated inside the voxel data
    return path.name


def _garbage(archive: Path) -> str:
    path = archive / "labelsTr" / "amos_0002.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    return path.name


def _missing_label(archive: Path) -> str:
    (archive / "labelsTr" / "amos_0002.nii.gz").unlink()
    return "labelsTr/amos_0002.nii.gz"


def _rewrite_label(archive: Path, change: Callable[[Volume], Volume]) -> str:
    path = archive / "labelsTr" / "amos_0002.nii.gz"
    save_nifti(path, change(load_nifti(path)))
    return path.name


def _shape_mismatch(archive: Path) -> str:
    return _rewrite_label(archive, lambda v: Volume(v.data[:, :, :-1], v.affine))


def _affine_mismatch(archive: Path) -> str:
    return _rewrite_label(archive, lambda v: Volume(v.data, v.affine + np.diag([0.0, 0.0, 0.5, 0.0])))


def _label_out_of_range(archive: Path) -> str:
    def change(v: Volume) -> Volume:
        data = v.data.copy()
        data[0, 0, 0] = 16
        return Volume(data, v.affine)

    return _rewrite_label(archive, change)


def _nan_intensities(archive: Path) -> str:
    path = archive / "imagesTr" / "amos_0002.nii.gz"
    volume = load_nifti(path)
    data = volume.data.astype(np.float32)
    data[1, 2, 3] = np.nan
    save_nifti(path, Volume(data, volume.affine))
    return path.name


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_corrupt, "readable NIfTI"),
        (_garbage, "readable NIfTI"),
        (_missing_label, "label file missing"),
        (_shape_mismatch, "shape"),
        (_affine_mismatch, "affine"),
        (_label_out_of_range, r"0\.\.15, found \[16\]"),
        (_nan_intensities, "NaN"),
    ],
)
def test_bad_input_raises_and_leaves_no_output(
    archive: Path, tmp_path: Path, damage: Callable[[Path], str], expected: str
) -> None:
    file_name = damage(archive)
    with pytest.raises(DataError, match=expected) as info:
        convert_archive(archive, tmp_path / "canonical")
    message = str(info.value)
    assert "amos_0002" in message and file_name in message
    assert _leftovers(tmp_path) == []


def test_failure_keeps_an_existing_output_untouched(archive: Path, tmp_path: Path) -> None:
    manifest = convert_archive(archive, tmp_path / "canonical")
    before = manifest.read_bytes()
    _missing_label(archive)
    with pytest.raises(DataError):
        convert_archive(archive, tmp_path / "canonical")
    assert manifest.read_bytes() == before
    assert _leftovers(tmp_path) == ["canonical"]


def test_atomic_dir_replaces_on_success_only(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "first"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
