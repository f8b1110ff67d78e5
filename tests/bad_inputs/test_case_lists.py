"""Case lists (micd train's, infer's, metrics') whose ids are paths or no case of the data set
(issue 35 item 3): refused naming the list file and the id, before any file is read for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bad_nifti import micd_error

CASES = ["case_0", "case_1", "case_2", "case_3"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A preprocessed folder's cases.csv and arrays, and beside it a file a list must never reach."""
    data = tmp_path / "preprocessed"
    for kind in ("images", "labels"):
        (data / kind).mkdir(parents=True)
        for case_id in CASES:
            np.save(data / kind / f"{case_id}.npy", np.zeros((8, 8, 8), np.float32))
    (data / "cases.csv").write_text("case_id,subset\n" + "".join(f"{c},train\n" for c in CASES))
    (tmp_path / "outside" / "images").mkdir(parents=True)
    np.save(tmp_path / "outside" / "images" / "secret.npy", np.ones((8, 8, 8), np.float32))
    return data


def lists(tmp_path: Path, labelled: list[str]) -> dict[str, Path]:
    content = {"train": CASES[:3], "labelled": labelled, "unlabelled": CASES[1:3], "eval": CASES[3:]}
    paths = {}
    for name, ids in content.items():
        paths[name] = tmp_path / "splits" / f"{name}.txt"
        paths[name].parent.mkdir(exist_ok=True)
        paths[name].write_text("".join(f"{i}\n" for i in ids))
    return paths


def train_error(data_dir: Path, tmp_path: Path, split: dict[str, Path]) -> str:
    return micd_error(
        "train", "--data-dir", data_dir, "--out-dir", tmp_path / "run", "--method", "supervised",
        "--family", "synthetic", "--dataset", "tiny", "--ratio", "5", "--seed", "0",
        *[arg for name, path in split.items() for arg in (f"--{name}", path)],
    )  # fmt: skip


@pytest.mark.parametrize("bad_id", ["../outside/secret", "../../etc/passwd", "/etc/passwd", "..", "a\\b"])
def test_a_path_as_a_case_id_in_a_training_list_is_refused(
    data_dir, tmp_path, snapshot, assert_unchanged, bad_id
) -> None:
    split = lists(tmp_path, ["case_0", bad_id])
    before = snapshot(tmp_path)
    message = train_error(data_dir, tmp_path, split)
    assert message == (
        f"micd train: error: case {bad_id}, file {split['labelled']}: expected a case id (a name such as "
        "amos_0001), found a path: ids never name a file"
    )
    assert_unchanged(tmp_path, before)  # no run folder


def test_an_id_that_is_no_case_of_the_data_set_is_refused(data_dir, tmp_path, snapshot, assert_unchanged) -> None:
    split = lists(tmp_path, ["case_0", "amos_9999"])
    before = snapshot(tmp_path)
    message = train_error(data_dir, tmp_path, split)
    assert message == (
        f"micd train: error: case amos_9999, file {split['labelled']}: not a case of the data set: "
        f"{data_dir / 'cases.csv'} lists no such id (1 such ids)"
    )
    assert_unchanged(tmp_path, before)


def test_infer_and_metrics_refuse_a_path_in_their_case_list(data_dir, tmp_path, snapshot, assert_unchanged) -> None:
    cases = tmp_path / "test.txt"
    cases.write_text("case_3\n../outside/secret\n")
    before = snapshot(tmp_path)
    message = micd_error(
        "infer", "--model", tmp_path / "model.pt", "--data-dir", data_dir, "--cases", cases, "--out", tmp_path / "p"
    )
    assert message.startswith(f"micd infer: error: case ../outside/secret, file {cases}: expected a case id")
    message = micd_error(
        "metrics", "--predictions", tmp_path / "p", "--data-dir", data_dir, "--cases", cases,
        "--family", "synthetic", "--dataset", "tiny", "--method", "supervised", "--ratio", "5", "--seed", "0",
        "--out", tmp_path / "metrics.csv",
    )  # fmt: skip
    assert message.startswith(f"micd metrics: error: case ../outside/secret, file {cases}: expected a case id")
    assert_unchanged(tmp_path, before)
