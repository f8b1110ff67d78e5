"""Scans ``micd segment`` refuses, each named, every scan checked before the first is segmented,
nothing written (issue 35 item 4, issue 38 item 6). The model is a real, untrained model file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_nifti import micd_error, write_nifti

from micd.data.classes import AMOS_CLASSES
from micd.data.io import Volume, load_nifti, save_nifti
from micd.data.synthetic import generate_archive
from micd.methods import build_method
from micd.model_file import model_record, save_model

TRAIN_SETTINGS = {"n_filters": 2, "dropout": 0.0, "patch_size": [16, 16, 16], "window_stride": [16, 16, 16]}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained supervised model of the synthetic family, with the record micd segment needs."""
    torch.manual_seed(0)
    method = build_method("supervised", {}, len(AMOS_CLASSES), 2, 0.0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    record = model_record(
        method="supervised",
        method_state=method.inference_state_dict(),
        method_settings={},
        train_settings=TRAIN_SETTINGS,
        num_classes=len(AMOS_CLASSES),
        best_epoch=0,
        best_eval_dice=0.0,
        provenance={"method": "supervised", "family": "synthetic", "dataset": "synthetic", "seed": 0},
        preprocessing={"mode": "grid", "grid": [16, 16, 16], "hu_window": [-75.0, 275.0]},
    )
    save_model(record, path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    """A synthetic CT in HU (int16, L-P-S) and its label map."""
    archive = tmp_path_factory.mktemp("archive") / "archive"
    generate_archive(archive, 1, 0, seed=2, inplane=(40, 44), slices=(16, 18))
    return load_nifti(archive / "imagesTr" / "amos_0001.nii.gz")


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    return folder


def refused(model: Path, tmp_path: Path, snapshot, assert_unchanged, *inputs: Path) -> str:
    before = snapshot(tmp_path)
    message = micd_error("segment", *inputs, "--model", model, "--out", tmp_path / "segmented", "--device", "cpu")
    assert message.startswith("micd segment: error: ")
    assert_unchanged(tmp_path, before)  # no output folder, no temporary one
    return message


def test_a_spacing_of_1e6_mm_is_refused(model, scan, scans, tmp_path, snapshot, assert_unchanged) -> None:
    path = write_nifti(scans / "huge.nii.gz", scan.data, np.diag([1e6, 1e6, 1e6, 1.0]))
    message = refused(model, tmp_path, snapshot, assert_unchanged, path)
    assert (
        f"case huge, file {path}: expected voxel sizes between 0.05 and 50 mm, found 1e+06 x 1e+06 x 1e+06" in message
    )


@pytest.mark.parametrize("shape", [(1, 1, 1), (40, 40, 3)])
def test_a_volume_too_small_to_segment_is_refused(
    model, scan, scans, tmp_path, snapshot, assert_unchanged, shape
) -> None:
    path = scans / "tiny.nii.gz"
    save_nifti(path, Volume(scan.data[: shape[0], : shape[1], : shape[2]].copy(), scan.affine))
    message = refused(model, tmp_path, snapshot, assert_unchanged, path)
    assert f"case tiny, file {path}: expected at least 8 voxels along every axis to segment, found shape {shape}" in (
        message
    )


def test_a_folder_whose_second_scan_is_a_label_map_fails_before_the_first_is_segmented(
    model, scan, scans, tmp_path, snapshot, assert_unchanged, capsys
) -> None:
    save_nifti(scans / "a_ct.nii.gz", scan)
    labels = scans / "b_labels.nii.gz"
    save_nifti(labels, Volume((scan.data > 0).astype(np.uint8) * 6, scan.affine))
    message = refused(model, tmp_path, snapshot, assert_unchanged, scans)
    assert f"case b_labels, file {labels}: expected a CT in Hounsfield units" in message
    assert "organs found" not in capsys.readouterr().out  # the good first scan was not segmented either


def test_two_scans_of_one_name_name_both_files(model, scan, scans, tmp_path, snapshot, assert_unchanged) -> None:
    save_nifti(scans / "ct.nii.gz", scan)
    (scans / "ct.nii").write_bytes(gzip.decompress((scans / "ct.nii.gz").read_bytes()))
    message = refused(model, tmp_path, snapshot, assert_unchanged, scans)
    assert f"{scans / 'ct.nii'} and {scans / 'ct.nii.gz'} would write the same label map ct.nii.gz" in message


@pytest.mark.parametrize(
    ("affine", "expected"),
    [
        (np.diag([2.0, 2.0, 0.0, 1.0]), "found column 2 all zeros"),
        (np.full((4, 4), np.nan), "expected a finite affine"),
    ],
    ids=["zero_column", "nan"],
)
def test_a_broken_affine_is_named(model, scan, scans, tmp_path, snapshot, assert_unchanged, affine, expected) -> None:
    path = write_nifti(scans / "broken.nii.gz", scan.data, affine)
    message = refused(model, tmp_path, snapshot, assert_unchanged, path)
    assert f"case broken, file {path}: " in message and expected in message


def test_a_uint16_ct_without_its_offset_is_refused_as_at_convert(
    model, scan, scans, tmp_path, snapshot, assert_unchanged
) -> None:
    path = scans / "raw.nii.gz"
    save_nifti(path, Volume((scan.data.astype(np.int32) + 1024).astype(np.uint16), scan.affine))
    message = refused(model, tmp_path, snapshot, assert_unchanged, path)
    assert f"case raw, file {path}: " in message and "is its -1024 rescale intercept, scl_inter, missing?" in message


def test_the_good_scan_alone_is_segmented(model, scan, scans, tmp_path) -> None:
    """The checks refuse what they should only: the same CT on its own goes through."""
    save_nifti(scans / "a_ct.nii.gz", scan)
    from micd.cli import main

    main(["segment", str(scans), "--model", str(model), "--out", str(tmp_path / "segmented"), "--device", "cpu"])
    assert load_nifti(tmp_path / "segmented" / "a_ct.nii.gz").data.shape == scan.data.shape
