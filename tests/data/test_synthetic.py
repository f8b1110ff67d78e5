"""Tests of the synthetic AMOS-like phantom (micd.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from micd.data.classes import AMOS_CLASSES
from micd.data.synthetic import SizeOptions, generate_archive, generate_case

SMALL = {"inplane": (56, 64), "slices": (24, 28)}
N_TRAIN, N_VALIDATION, SEED = 3, 2, 7


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "archive"
    generate_archive(out, N_TRAIN, N_VALIDATION, SEED, **SMALL)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cases(archive: Path) -> list[tuple[nib.Nifti1Image, nib.Nifti1Image]]:
    return [
        (
            nib.load(image),
            nib.load(archive / image.parent.name.replace("images", "labels") / image.name),
        )
        for image in sorted(archive.glob("images*/*.nii.gz"))
    ]


def test_layout_and_dataset_json_follow_amos(archive: Path) -> None:
    assert sorted(p.name for p in archive.iterdir()) == [
        ".micd-output",  # the stage that wrote the folder (micd.atomic)
        "dataset.json",
        "imagesTr",
        "imagesVa",
        "labelsTr",
        "labelsVa",
    ]
    train = [f"amos_{k:04d}" for k in range(1, N_TRAIN + 1)]
    validation = [f"amos_{k:04d}" for k in range(N_TRAIN + 1, N_TRAIN + N_VALIDATION + 1)]
    for folder, ids in (
        ("imagesTr", train),
        ("labelsTr", train),
        ("imagesVa", validation),
        ("labelsVa", validation),
    ):
        assert sorted(p.name for p in (archive / folder).iterdir()) == [f"{i}.nii.gz" for i in ids]

    meta = json.loads((archive / "dataset.json").read_text())
    assert meta["labels"] == {str(c.label): c.name for c in AMOS_CLASSES}
    assert meta["modality"] == {"0": "CT"}
    assert (meta["numTraining"], meta["numValidation"]) == (N_TRAIN, N_VALIDATION)
    assert meta["training"][0] == {
        "image": "./imagesTr/amos_0001.nii.gz",
        "label": "./labelsTr/amos_0001.nii.gz",
    }
    for entry in meta["training"] + meta["validation"]:
        assert (archive / entry["image"]).is_file() and (archive / entry["label"]).is_file()
    assert [e["image"] for e in meta["validation"]] == [f"./imagesVa/{i}.nii.gz" for i in validation]


def test_images_are_int16_hu_and_labels_uint8_with_spacing_in_affine(
    archive: Path,
) -> None:
    for image, label in _cases(archive):
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(nib.affines.voxel_sizes(image.affine), image.header.get_zooms(), rtol=1e-5)
        data = np.asanyarray(image.dataobj)
        assert np.median(data[0, 0, :]) < -900  # air in the corner
        assert data.min() >= -1024


def test_every_class_present_in_every_case(archive: Path) -> None:
    for _, label in _cases(archive):
        assert set(np.unique(np.asanyarray(label.dataobj)).tolist()) == set(range(16))
    for k in (1, 2):  # default sizes too
        assert np.unique(generate_case(SEED, k)[1].data).tolist() == list(range(16))


def test_class_volumes_follow_the_design() -> None:
    sizes = SizeOptions((64, 72), (28, 32))
    fractions = np.mean(
        [np.bincount(generate_case(11, k, sizes)[1].data.ravel(), minlength=16) for k in range(1, 9)],
        axis=0,
    )[1:]
    organs = {c.label: fractions[c.label - 1] for c in AMOS_CLASSES[1:]}
    assert max(organs, key=organs.get) == 6  # liver
    smallest = sorted(organs, key=organs.get)[:3]
    assert set(smallest) == {5, 11, 12}  # esophagus and adrenal glands
    assert 100 <= fractions.max() / fractions.min() <= 500


def test_organ_intensities_are_ct_like() -> None:
    image, label = generate_case(SEED, 1)
    mean = {c: float(image.data[label.data == c].mean()) for c in range(16)}
    assert 35 < mean[6] < 85  # liver
    assert mean[2] > 100 and mean[3] > 100 and mean[8] > 120  # kidneys, aorta: contrast enhanced
    assert mean[4] < 30 and mean[14] < 30  # gallbladder, bladder: fluid
    assert abs(mean[6] - mean[1]) < 40 and abs(mean[10] - mean[13]) < 30  # low-contrast neighbours


def test_same_seed_gives_identical_files_and_another_seed_different(archive: Path, tmp_path: Path) -> None:
    generate_archive(tmp_path / "again", N_TRAIN, N_VALIDATION, SEED, **SMALL)
    assert _files(tmp_path / "again") == _files(archive)
    generate_archive(tmp_path / "other", N_TRAIN, N_VALIDATION, SEED + 1, **SMALL)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(archive).keys()
    assert all(other[name] != data for name, data in _files(archive).items() if name.endswith(".nii.gz"))


def test_a_case_does_not_depend_on_n_train(archive: Path, tmp_path: Path) -> None:
    generate_archive(tmp_path / "fewer", 2, 2, SEED, **SMALL)
    # amos_0003 is a training case in one archive and a validation case in the other.
    assert (tmp_path / "fewer/imagesVa/amos_0003.nii.gz").read_bytes() == (
        archive / "imagesTr/amos_0003.nii.gz"
    ).read_bytes()


def test_size_and_spacing_vary_between_cases_and_slices_are_thick(
    archive: Path,
) -> None:
    cases = _cases(archive)
    assert len({image.shape for image, _ in cases}) > 1
    spacings = np.array([nib.affines.voxel_sizes(image.affine) for image, _ in cases])
    assert len({tuple(np.round(s, 3)) for s in spacings}) == len(cases)
    for image, _ in cases:
        n_xy, _, n_z = image.shape
        assert SMALL["inplane"][0] <= n_xy <= SMALL["inplane"][1] and SMALL["slices"][0] <= n_z <= SMALL["slices"][1]
    assert np.all(spacings[:, 0] == spacings[:, 1])
    assert np.all((spacings[:, 2] / spacings[:, 0] > 1.5) & (spacings[:, 2] / spacings[:, 0] < 5))


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        generate_archive(tmp_path / "a", 0, 1, 0)
    with pytest.raises(ValueError, match="size ranges"):
        generate_archive(tmp_path / "a", 1, 1, 0, inplane=(64, 32))
    assert not (tmp_path / "a").exists()
