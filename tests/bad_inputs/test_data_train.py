"""Bad inputs of the stages after preprocessing, each refused before any work with a named error
(issue 35 items 4 and 6): a patch larger than the grid, a wrong family or class count, an empty
labelled list, a damaged archive entry, settings and numbers out of bounds on the command line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_nifti import micd_error
from test_model_file import record_of

from micd.cli import main
from micd.data.classes import classes_for
from micd.data.convert import convert_archive
from micd.data.io import Volume, save_nifti, write_case_list
from micd.data.preprocess import grid_affine, preprocess, read_cases
from micd.data.synthetic import generate_archive
from micd.model_file import save_model

GRID = (16, 32, 32)
TINY_TRAIN = {"max_epochs": 1, "n_filters": 2, "patch_size": [16, 32, 32], "window_stride": [16, 32, 32]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed synthetic set (3 training cases, 1 test case) and its case lists."""
    root = tmp_path_factory.mktemp("data")
    generate_archive(root / "archive", 3, 1, seed=5, inplane=(40, 48), slices=(16, 20))
    manifest = convert_archive(root / "archive", root / "canonical")
    preprocess(manifest, root / "preprocessed", GRID, num_classes=len(classes_for("synthetic")))
    lists = {
        "train": ["amos_0001", "amos_0002"],
        "labelled": ["amos_0001"],
        "unlabelled": ["amos_0002"],
        "eval": ["amos_0003"],
        "test": ["amos_0004"],
        "empty": [],
    }
    for name, ids in lists.items():
        write_case_list(root / f"{name}.txt", ids)
    return root


def train_args(data: Path, out: Path, **changes: str) -> list[str]:
    options = {
        "data-dir": data / "preprocessed",
        **{name: data / f"{name}.txt" for name in ("train", "labelled", "unlabelled", "eval")},
        "out-dir": out,
        "method": "supervised",
        "family": "synthetic",
        "dataset": "synthetic",
        "ratio": "50",
        "seed": "0",
        "train-settings": json.dumps(TINY_TRAIN),
        **changes,
    }
    return ["train", *(str(a) for key, value in options.items() for a in (f"--{key}", value))]


def refused_by_train(data: Path, tmp_path: Path, snapshot, assert_unchanged, **changes: str) -> str:
    before_data, before_here = snapshot(data), snapshot(tmp_path)
    message = micd_error(*train_args(data, tmp_path / "run", **changes))
    assert message.startswith("micd train: error: ")
    assert_unchanged(data, before_data)
    assert_unchanged(tmp_path, before_here)  # no run folder: nothing trained, no state/
    return message


def test_a_patch_larger_than_the_grid_is_named_before_the_first_epoch(data, tmp_path, snapshot, assert_unchanged):
    settings = json.dumps({**TINY_TRAIN, "patch_size": [32, 32, 32]})
    message = refused_by_train(data, tmp_path, snapshot, assert_unchanged, **{"train-settings": settings})
    cases = data / "preprocessed" / "cases.csv"
    assert (
        f"case amos_0001, file {cases}: the train patch [32, 32, 32] is larger than the preprocessed grid " in message
    )
    assert "[16, 32, 32]" in message


def test_an_eval_case_smaller_than_the_centre_crop_is_named(data) -> None:
    """The patch fits no case of a fixed grid: the first case named is a training one; with the
    training cases fitting, an eval case under DHC's centre crop is checked the same way."""
    from micd.data.preprocess import check_patch_fits

    with pytest.raises(ValueError, match="case amos_0003, .*for the centre crop that validates it"):
        check_patch_fits(data / "preprocessed", [], ["amos_0003"], [32, 32, 32], crops_eval=True)


def test_a_family_of_other_classes_than_the_data_names_both_counts(data, tmp_path, snapshot, assert_unchanged):
    message = refused_by_train(data, tmp_path, snapshot, assert_unchanged, family="synapse")
    stats = data / "preprocessed" / "stats.json"
    assert f"file {stats}: the data set has 16 classes (background included), --family synapse has 14" in message


def test_an_empty_labelled_list_is_named(data, tmp_path, snapshot, assert_unchanged) -> None:
    message = refused_by_train(data, tmp_path, snapshot, assert_unchanged, labelled=data / "empty.txt")
    assert f"file {data / 'empty.txt'}: expected at least one labelled case id, found none" in message


def test_a_method_setting_of_the_wrong_type_is_named_before_any_data(data, tmp_path, snapshot, assert_unchanged):
    message = refused_by_train(
        data, tmp_path, snapshot, assert_unchanged, method="micd", **{"method-settings": '{"mask_block": "8"}'}
    )
    assert "micd setting 'mask_block': got '8' (str), expected an integer" in message


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("train-settings", '{"lr": -0.01}', "argument --train-settings: lr: got -0.01, expected a value above 0"),
        ("train-settings", '{"lr": "fast"}', "argument --train-settings: lr: got 'fast' (str), expected a number"),
        ("threads", "0", "argument --threads: expected an integer at least 1, got 0"),
        ("seed", "-1", "argument --seed: expected an integer at least 0, got -1"),
        ("ratio", "x", "argument --ratio: expected an integer at least 1 and at most 100, got 'x'"),
        ("device-wait", "nan", "argument --device-wait: expected a number at least 0, got nan"),
    ],
    ids=["negative_lr", "text_lr", "zero_threads", "negative_seed", "text_ratio", "nan_wait"],
)
def test_a_number_out_of_bounds_is_a_usage_error(data, tmp_path, capsys, option, value, expected) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(data, tmp_path / "run", **{option: value}))
    assert exit_info.value.code == 2  # argparse's usage error
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_infer_with_a_model_of_other_classes_names_both_counts(data, tmp_path, snapshot, assert_unchanged) -> None:
    model = tmp_path / "model.pt"
    save_model(record_of("supervised"), model)  # 3 classes
    before = snapshot(tmp_path)
    message = micd_error(
        "infer", "--model", model, "--data-dir", data / "preprocessed", "--cases", data / "test.txt",
        "--out", tmp_path / "predictions", "--device", "cpu",
    )  # fmt: skip
    stats = data / "preprocessed" / "stats.json"
    assert f"file {stats}: the data set has 16 classes (background included), the model file {model} has 3" in message
    assert_unchanged(tmp_path, before)


def write_prediction(data: Path, folder: Path, case_id: str, change=None) -> None:
    """The case's true label map as its prediction (``change``d), as micd infer writes one."""
    label = np.load(data / "preprocessed" / "labels" / f"{case_id}.npy")
    if change is not None:
        label = change(label.copy())
    row = read_cases(data / "preprocessed")[case_id]
    save_nifti(folder / f"{case_id}.nii.gz", Volume(np.ascontiguousarray(label.transpose(2, 1, 0)), grid_affine(row)))


def metrics_args(data: Path, predictions: Path, out: Path, family: str) -> list[object]:
    return [
        "metrics", "--predictions", predictions, "--data-dir", data / "preprocessed", "--cases", data / "test.txt",
        "--family", family, "--dataset", "synthetic", "--method", "supervised", "--ratio", "5", "--seed", "0",
        "--out", out,
    ]  # fmt: skip


def test_metrics_of_amos_labels_under_synapse_names_is_refused(data, tmp_path, snapshot, assert_unchanged) -> None:
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    write_prediction(data, predictions, "amos_0004")
    # under the data's own family the same prediction is scored
    main([str(a) for a in metrics_args(data, predictions, tmp_path / "right.csv", "synthetic")])
    assert (tmp_path / "right.csv").is_file()
    before = snapshot(tmp_path)
    message = micd_error(*metrics_args(data, predictions, tmp_path / "metrics.csv", "synapse"))
    assert "the data set has 16 classes (background included), the family's class list has 14" in message
    assert_unchanged(tmp_path, before)


def test_metrics_of_a_prediction_outside_the_classes_names_the_case_and_file(
    data, tmp_path, snapshot, assert_unchanged
) -> None:
    predictions = tmp_path / "predictions"
    predictions.mkdir()

    def add_label_20(label: np.ndarray) -> np.ndarray:
        label[0, 0, 0] = 20
        return label

    write_prediction(data, predictions, "amos_0004", add_label_20)
    before = snapshot(tmp_path)
    message = micd_error(*metrics_args(data, predictions, tmp_path / "metrics.csv", "synthetic"))
    path = predictions / "amos_0004.nii.gz"
    assert f"case amos_0004, file {path}: expected labels 0..15 (the family's 16 classes), found [20]" in message
    assert_unchanged(tmp_path, before)


def test_the_split_check_names_an_empty_labelled_list(data, tmp_path, snapshot, assert_unchanged) -> None:
    published = tmp_path / "published"
    published.mkdir()
    for name, ids in {
        "train.txt": ["amos_0001", "amos_0002"],
        "eval.txt": ["amos_0003"],
        "test.txt": ["amos_0004"],
        "labeled_5p.txt": [],
        "unlabeled_5p.txt": ["amos_0001", "amos_0002"],
    }.items():
        write_case_list(published / name, ids)
    before = snapshot(tmp_path)
    message = micd_error(
        "split", "--cases", data / "preprocessed" / "cases.csv", "--out", tmp_path / "split", "--ratios", "5",
        "--seed", "0", "--eval-fraction", "0.2", "--published", published,
    )  # fmt: skip
    assert "labelled_5p.txt is empty: expected at least one case" in message
    assert "labelled_5p.txt: published" in message  # where the list came from
    assert_unchanged(tmp_path, before)


@pytest.mark.parametrize(
    ("compression", "cause"),
    [(zipfile.ZIP_DEFLATED, "while decompressing data"), (zipfile.ZIP_STORED, "Bad CRC-32")],
    ids=["zlib_error", "bad_crc"],
)
def test_a_corrupt_zip_entry_names_the_archive_and_the_entry(
    tmp_path, snapshot, assert_unchanged, compression, cause
) -> None:
    archive = tmp_path / "data.zip"
    payload = np.random.default_rng(0).integers(0, 4, 200_000, dtype=np.uint8).tobytes()
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("amos22/readme.txt", b"fine")
        zf.writestr("amos22/imagesTr/amos_0001.nii.gz", payload)
    raw = bytearray(archive.read_bytes())
    start = raw.find(b"amos22/imagesTr/amos_0001.nii.gz") + 200  # inside that entry's data
    raw[start : start + 64] = bytes(64)
    archive.write_bytes(bytes(raw))
    before = snapshot(tmp_path)
    message = micd_error("extract", "--archive", archive, "--out", tmp_path / "extracted")
    assert f"file {archive}: entry 'amos22/imagesTr/amos_0001.nii.gz' is damaged" in message and cause in message
    assert_unchanged(tmp_path, before)
