"""Tests of the deterministic preprocessing (micd.data.preprocess)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from micd.data.convert import MANIFEST_COLUMNS, convert_archive
from micd.data.io import Volume, save_nifti, write_csv
from micd.data.preprocess import preprocess, resize_label, window_normalise
from micd.data.synthetic import generate_archive
from micd.errors import DataError

GRID = (16, 24, 24)


def _canonical(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], spacing=(1.0, 1.0, 1.0)) -> Path:
    """A hand-made conversion output: NIfTI (x, y, z) arrays and a manifest."""
    rows = []
    for case_id, (image, label) in cases.items():
        affine = np.diag([*spacing, 1.0])
        save_nifti(root / "images" / f"{case_id}.nii.gz", Volume(image, affine))
        save_nifti(root / "labels" / f"{case_id}.nii.gz", Volume(label, affine))
        row = dict.fromkeys(MANIFEST_COLUMNS, "")
        rows.append(row | {"case_id": case_id, "subset": "train", "modality": "ct"})
    write_csv(root / "manifest.csv", MANIFEST_COLUMNS, rows)
    return root / "manifest.csv"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    generate_archive(root / "archive", 2, 1, seed=5, inplane=(40, 48), slices=(16, 20))
    manifest = convert_archive(root / "archive", root / "canonical")
    preprocess(manifest, root / "preprocessed", GRID)
    return root


def test_window_then_min_max_on_a_hand_made_volume() -> None:
    image = np.array([-1000.0, -75.0, 100.0, 275.0, 2000.0]).reshape(1, 1, 5)
    np.testing.assert_allclose(window_normalise(image, (-75.0, 275.0)).ravel(), [0, 0, 0.5, 1, 1])
    # min-max uses the clipped volume's own range, not the window's
    inside = np.array([0.0, 50.0, 100.0]).reshape(1, 1, 3)
    np.testing.assert_allclose(window_normalise(inside, (-75.0, 275.0)).ravel(), [0, 0.5, 1])
    constant = window_normalise(np.full((2, 2, 2), 40.0), (-75.0, 275.0))
    assert constant.dtype == np.float32 and np.all(constant == 0)


def test_label_resize_copies_ids_exactly() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 16, size=(5, 7, 9)).astype(np.uint8)
    up = resize_label(label, (10, 14, 18))
    assert up.dtype == np.uint8 and set(np.unique(up)) == set(np.unique(label))
    np.testing.assert_array_equal(up[::2, ::2, ::2], label)  # exact 2x: each voxel copied
    down = resize_label(label, (3, 4, 5))
    assert set(np.unique(down)) <= set(np.unique(label))


def test_outputs_have_grid_shape_and_dtypes(preprocessed: Path) -> None:
    out = preprocessed / "preprocessed"
    cases = _csv(out / "cases.csv")
    assert [c["case_id"] for c in cases] == ["amos_0001", "amos_0002", "amos_0003"]
    assert [c["subset"] for c in cases] == ["train", "train", "validation"]
    manifest = {r["case_id"]: r for r in _csv(preprocessed / "canonical" / "manifest.csv")}
    for case in cases:
        image = np.load(out / "images" / f"{case['case_id']}.npy")
        label = np.load(out / "labels" / f"{case['case_id']}.npy")
        assert image.shape == label.shape == GRID
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.min() >= 0.0 and image.max() <= 1.0
        # cases.csv is in (D, H, W) order, the reverse of the manifest's NIfTI (x, y, z)
        source = manifest[case["case_id"]]
        assert case["original_shape"] == "x".join(reversed(source["shape"].split("x")))
        assert case["original_spacing"] == "x".join(reversed(source["spacing"].split("x")))
        assert case["grid"] == "x".join(map(str, GRID))
        shape = [int(n) for n in case["original_shape"].split("x")]
        spacing = [float(s) for s in case["original_spacing"].split("x")]
        expected = [round(n * s / g, 4) for n, s, g in zip(shape, spacing, GRID)]
        assert [float(s) for s in case["grid_spacing"].split("x")] == pytest.approx(expected, abs=2e-4)


def test_checks_and_stats(preprocessed: Path) -> None:
    out = preprocessed / "preprocessed"
    checks = _csv(out / "checks.csv")
    assert all(c["ok"] == "True" for c in checks)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["grid"] == list(GRID) and stats["hu_window"] == [-75.0, 275.0]
    assert len(stats["voxel_fraction"]) == 16
    assert sum(stats["voxel_fraction"]) == pytest.approx(1.0)
    assert stats["voxel_fraction"][0] == max(stats["voxel_fraction"])
    labels = [np.load(out / "labels" / f"{c['case_id']}.npy") for c in checks]
    counts = np.sum([np.bincount(x.ravel(), minlength=16) for x in labels], axis=0)
    np.testing.assert_allclose(stats["voxel_fraction"], counts / counts.sum())
    assert stats["cases_with_class"] == [sum(int(c in x) for x in labels) for c in range(16)]
    for check, label in zip(checks, labels):
        present = set(np.unique(label).tolist())
        assert check["classes_present"] == " ".join(map(str, sorted(present)))
        lost = {int(c) for c in check["classes_lost"].split()}
        assert lost == set(range(16)) - present  # the synthetic source has every class


def test_label_ids_preserved_when_upsampling(tmp_path: Path) -> None:
    label = np.arange(16, dtype=np.uint8).repeat(2).reshape(2, 4, 4)
    image = np.linspace(-100, 300, label.size).reshape(label.shape).astype(np.int16)
    preprocess(
        _canonical(tmp_path / "canonical", {"amos_0001": (image, label)}),
        tmp_path / "out",
        (8, 8, 4),
    )
    grid_label = np.load(tmp_path / "out" / "labels" / "amos_0001.npy")
    assert set(np.unique(grid_label).tolist()) == set(range(16))
    assert _csv(tmp_path / "out" / "checks.csv")[0]["classes_lost"] == ""


def test_z_axis_becomes_axis_0(tmp_path: Path) -> None:
    # NIfTI (x, y, z) = (4, 6, 20); the label is a thin rod long in z, the image a ramp along z.
    image = np.broadcast_to(np.linspace(-75, 275, 20), (4, 6, 20)).astype(np.int16)
    label = np.zeros((4, 6, 20), dtype=np.uint8)
    label[1:3, 2:4, 2:18] = 6
    manifest = _canonical(tmp_path / "canonical", {"amos_0001": (image, label)}, spacing=(0.8, 0.8, 5.0))
    preprocess(manifest, tmp_path / "out", (20, 6, 4))
    grid_image = np.load(tmp_path / "out" / "images" / "amos_0001.npy")
    grid_label = np.load(tmp_path / "out" / "labels" / "amos_0001.npy")
    np.testing.assert_array_equal(grid_label, label.transpose(2, 1, 0))
    assert np.all(np.diff(grid_image[:, 0, 0]) > 0)  # the ramp runs along axis 0
    assert np.ptp(grid_image, axis=(1, 2)).max() < 1e-6
    assert _csv(tmp_path / "out" / "cases.csv")[0]["original_spacing"] == "5.0x0.8x0.8"


def test_out_of_range_label_is_flagged(tmp_path: Path) -> None:
    label = np.zeros((4, 4, 4), dtype=np.uint8)
    label[0, 0, 0] = 20
    manifest = _canonical(tmp_path / "canonical", {"amos_0001": (np.zeros((4, 4, 4), np.int16), label)})
    preprocess(manifest, tmp_path / "out", (4, 4, 4))
    assert _csv(tmp_path / "out" / "checks.csv")[0]["ok"] == "False"
    assert sum(json.loads((tmp_path / "out" / "stats.json").read_text())["voxel_fraction"]) < 1.0


def test_missing_case_file_leaves_no_output(tmp_path: Path) -> None:
    zeros = np.zeros((4, 4, 4), np.int16)
    manifest = _canonical(tmp_path / "canonical", {"amos_0001": (zeros, zeros.astype(np.uint8))})
    (tmp_path / "canonical" / "labels" / "amos_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="amos_0001"):
        preprocess(manifest, tmp_path / "out", (4, 4, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canonical"]
