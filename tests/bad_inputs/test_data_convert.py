"""Bad training data refused by ``micd convert`` with the case and the file named, the archive
untouched and no output (not even a temporary folder) left behind (issue 35, items 3 and 4)."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_nifti import micd_error, write_nifti

from micd.data.convert import convert_archive
from micd.data.io import Volume, load_nifti, save_nifti

CASE = "amos_0002"


def refused(archive: Path, snapshot, assert_unchanged, *extra: str) -> str:
    """``micd convert``'s error; the folder holding the archive is as before (no output, no temporary)."""
    root = archive.parent
    before = snapshot(root)
    message = micd_error("convert", "--archive", archive, "--out", root / "canonical", *extra)
    assert message.startswith("micd convert: error: ")
    assert_unchanged(root, before)
    return message


def image_path(archive: Path, case: str = CASE) -> Path:
    return archive / "imagesTr" / f"{case}.nii.gz"


def load_nifti_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def replace_image(archive: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    path = image_path(archive)
    volume = load_nifti(path)
    save_nifti(path, Volume(change(volume.data), volume.affine))
    return path


def test_one_case_as_nii_and_nii_gz_names_both_files(archive, snapshot, assert_unchanged) -> None:
    gz = image_path(archive)
    plain = gz.with_name(f"{CASE}.nii")
    plain.write_bytes(load_nifti_bytes(gz))
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}" in message and str(plain) in message and str(gz) in message
    assert "expected each case id once" in message


def test_one_case_in_images_tr_and_images_va_names_both_files(archive, snapshot, assert_unchanged) -> None:
    va_image = archive / "imagesVa" / f"{CASE}.nii.gz"
    shutil.copy(image_path(archive), va_image)
    shutil.copy(archive / "labelsTr" / f"{CASE}.nii.gz", archive / "labelsVa" / f"{CASE}.nii.gz")
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}" in message and str(va_image) in message and str(image_path(archive)) in message


def test_one_label_as_nii_and_nii_gz_names_both_files(archive, snapshot, assert_unchanged) -> None:
    label = archive / "labelsTr" / f"{CASE}.nii.gz"
    plain = label.with_name(f"{CASE}.nii")
    plain.write_bytes(load_nifti_bytes(label))
    message = refused(archive, snapshot, assert_unchanged)
    assert str(plain) in message and str(label) in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda data: np.full_like(data, -1000), "found every voxel the same value (-1000)"),
        (lambda data: np.clip(data // 16, -128, 127).astype(np.int8), "found int8 voxels, which cannot hold them"),
        (
            lambda data: (data.astype(np.int32) + 1024).astype(np.uint16),
            "is its -1024 rescale intercept, scl_inter, missing?",
        ),
        (
            lambda data: ((data - data.min()) / float(data.max() - data.min())).astype(np.float32),
            "expected a CT in Hounsfield units (air -1000, fat -100, water 0; lowest value between -3100 and -200), "
            "found values 0 to 1",
        ),
    ],
    ids=["constant", "int8", "uint16_without_offset", "scaled_to_0_1"],
)
def test_an_image_that_is_no_ct_in_hounsfield_units_is_named(
    archive, snapshot, assert_unchanged, change, expected
) -> None:
    path = replace_image(archive, change)
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}, file {path}: " in message and expected in message


def test_a_spacing_of_1e9_mm_is_refused_before_anything_is_resampled(archive, snapshot, assert_unchanged) -> None:
    path = image_path(archive)
    volume = load_nifti(path)
    write_nifti(path, volume.data, np.diag([1e9, 1e9, 1e9, 1.0]))
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}, file {path}: expected voxel sizes between 0.05 and 50 mm, found 1e+09 x 1e+09 x 1e+09 mm" in (
        message
    )


def test_a_zero_column_in_the_affine_is_named_not_an_orientation_error(archive, snapshot, assert_unchanged) -> None:
    path = image_path(archive)
    write_nifti(path, load_nifti(path).data, np.diag([1.5, 0.0, 2.5, 1.0]))
    message = refused(archive, snapshot, assert_unchanged)
    assert (
        f"case {CASE}, file {path}: expected an affine whose columns give each voxel axis a size, found column 1"
        in (message)
    )
    assert "Orientation" not in message


def test_identical_nan_affines_are_reported_as_such_not_as_a_mismatch(archive, snapshot, assert_unchanged) -> None:
    nan_affine = np.full((4, 4), np.nan)
    for folder in ("imagesTr", "labelsTr"):
        path = archive / folder / f"{CASE}.nii.gz"
        write_nifti(path, load_nifti(path).data, nan_affine)
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}, file {image_path(archive)}: expected a finite affine" in message
    assert "found NaN" in message and "expected the image's affine" not in message


def test_a_label_with_a_zero_column_is_named(archive, snapshot, assert_unchanged) -> None:
    label = archive / "labelsTr" / f"{CASE}.nii.gz"
    write_nifti(label, load_nifti(label).data, np.diag([0.0, 1.0, 1.0, 1.0]))
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case {CASE}, file {label}: expected an affine whose columns give each voxel axis a size" in message


def test_an_mri_case_is_not_held_to_hounsfield_units_but_must_not_be_constant(
    archive, tmp_path, snapshot, assert_unchanged
) -> None:
    """AMOS ids above 500 are MRI: positive intensities pass, a constant image does not."""
    for folder in ("imagesVa", "labelsVa"):
        (archive / folder / "amos_0003.nii.gz").rename(archive / folder / "amos_0540.nii.gz")
    mri = archive / "imagesVa" / "amos_0540.nii.gz"
    volume = load_nifti(mri)
    save_nifti(mri, Volume((volume.data.astype(np.int32) + 1024).astype(np.int16), volume.affine))
    convert_archive(archive, tmp_path / "converted")
    assert (tmp_path / "converted" / "images" / "amos_0540.nii.gz").is_file()

    save_nifti(mri, Volume(np.full_like(volume.data, 300), volume.affine))
    message = refused(archive, snapshot, assert_unchanged)
    assert f"case amos_0540, file {mri}: expected an image, found every voxel the same value (300)" in message


def synapse_archive(source: Path, root: Path) -> Path:
    """``RawData/Training/{img,label}`` of the synthetic cases 1 and 2 (Synapse's layout)."""
    for k in (1, 2):
        for kind, folder in (("img", "imagesTr"), ("label", "labelsTr")):
            volume = load_nifti(source / folder / f"amos_{k:04d}.nii.gz")
            data = np.where(volume.data > 13, 0, volume.data) if kind == "label" else volume.data
            save_nifti(root / "RawData" / "Training" / kind / f"{kind}{k:04d}.nii.gz", Volume(data, volume.affine))
    return root / "RawData"


def test_a_synapse_image_as_nii_and_nii_gz_names_both_files(source, tmp_path, snapshot, assert_unchanged) -> None:
    archive = synapse_archive(source, tmp_path)
    gz = archive / "Training" / "img" / "img0002.nii.gz"
    plain = gz.with_name("img0002.nii")
    plain.write_bytes(load_nifti_bytes(gz))
    message = refused(archive, snapshot, assert_unchanged, "--layout", "synapse")
    assert str(plain) in message and str(gz) in message and "expected each case id once" in message


def test_preprocess_refuses_a_converted_image_of_1e9_mm_before_resampling(
    archive, tmp_path, snapshot, assert_unchanged
) -> None:
    """A converted folder made by an older micd, or edited by hand, meets the same rule."""
    manifest = convert_archive(archive, tmp_path / "converted")
    path = tmp_path / "converted" / "images" / f"{CASE}.nii.gz"
    write_nifti(path, load_nifti(path).data, np.diag([1e9, 1e9, 1e9, 1.0]))
    before = snapshot(tmp_path)
    message = micd_error(
        "preprocess", "--manifest", manifest, "--out", tmp_path / "preprocessed", "--family", "synthetic",
        "--mode", "spacing", "--spacing", "2", "2", "2", "--hu-window", "-75", "275",
    )  # fmt: skip
    assert f"case {CASE}, file {path}: expected voxel sizes between 0.05 and 50 mm" in message
    assert_unchanged(tmp_path, before)


def test_one_padding_value_below_the_floor_is_not_taken_for_the_lowest_hu(
    archive, tmp_path, snapshot, assert_unchanged
) -> None:
    """Some exports pad outside the field of view with -32768: the CT inside still converts, and
    an image scaled to 0..1 with the same padding is still refused."""

    def padded(data: np.ndarray) -> np.ndarray:
        data = data.astype(np.int16)
        data[:3, :3, :] = -32768
        return data

    replace_image(archive, padded)
    convert_archive(archive, tmp_path / "converted")

    path = replace_image(
        archive, lambda data: np.where(data == -32768, -32768, (data + 1024) / 4095).astype(np.float32)
    )
    before = snapshot(tmp_path)
    message = micd_error("convert", "--archive", archive, "--out", tmp_path / "again")
    assert f"case {CASE}, file {path}: " in message and "found values 0 to 0." in message
    assert_unchanged(tmp_path, before)
