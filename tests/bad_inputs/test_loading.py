"""Files micd loads (model.pt, state/checkpoint.pt) that must not run code or stop a run for good
(issue 35 items 1 and 6): every one is loaded weights-only, a bad one is named, and a damaged
checkpoint is set aside (renamed, never deleted) and training starts afresh."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_nifti import micd_error
from training_helpers import tiny_settings

from micd.data.classes import AMOS_CLASSES
from micd.errors import DataError, DiskFullError
from micd.methods import build_method
from micd.model_file import model_record, read_model, save_model
from micd.training.loop import TrainData, Trainer

NUM_CLASSES = 3


class WritesMarker:
    """What an attacker pickles: loading it unsafely runs Python code, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def model_dictionary() -> dict:
    torch.manual_seed(0)
    method = build_method("supervised", {}, len(AMOS_CLASSES), 2, 0.0)
    return model_record(
        method="supervised",
        method_state=method.inference_state_dict(),
        method_settings={},
        train_settings={"n_filters": 2, "dropout": 0.0, "patch_size": [16, 16, 16], "window_stride": [16, 16, 16]},
        num_classes=len(AMOS_CLASSES),
        best_epoch=0,
        best_eval_dice=0.0,
        provenance={"method": "supervised", "family": "synthetic", "dataset": "synthetic", "seed": 0},
        preprocessing={"mode": "grid", "grid": [16, 16, 16], "hu_window": [-75.0, 275.0]},
    )


def unsafe_load_runs_it(path: Path, marker: Path) -> bool:
    """Whether the payload really runs when loaded the old way (in another process): else the
    tests below would pass for a file that could never have done harm."""
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    return ran


@pytest.fixture
def evil_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model.pt that reads and works as one, with a payload beside its keys; and its marker."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "shared" / "model.pt"
    path.parent.mkdir()
    torch.save({**model_dictionary(), "notes": WritesMarker(marker)}, path)
    assert unsafe_load_runs_it(path, marker)
    return path, marker


def test_a_model_file_with_a_pickle_payload_is_refused_by_segment_and_never_runs(
    evil_model, tmp_path, snapshot, assert_unchanged
) -> None:
    path, marker = evil_model
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"never read")
    before = snapshot(tmp_path)
    message = micd_error("segment", scan, "--model", path, "--out", tmp_path / "out", "--device", "cpu")
    assert f"refusing {path}: it holds the Python object exec, which loading would run as code" in message
    assert not marker.exists()
    assert_unchanged(tmp_path, before)


def test_a_model_file_with_a_pickle_payload_is_refused_by_infer_and_never_runs(
    evil_model, tmp_path, snapshot, assert_unchanged
) -> None:
    path, marker = evil_model
    cases = tmp_path / "cases.txt"
    cases.write_text("amos_0001\n")
    (tmp_path / "data").mkdir()
    before = snapshot(tmp_path)
    message = micd_error(
        "infer", "--model", path, "--data-dir", tmp_path / "data", "--cases", cases, "--out", tmp_path / "predictions"
    )
    assert message.startswith("micd infer: error: ")
    assert f"refusing {path}: it holds the Python object exec" in message
    assert not marker.exists()
    assert_unchanged(tmp_path, before)


@pytest.mark.parametrize(
    "content, found",
    [
        (b"case_id,subset\namos_0001,train\n", "it does not start as a PyTorch file (a zip archive) does"),
        (b"", "it is empty"),
        (os.urandom(2048).replace(b"PK", b"pk"), "it does not start as a PyTorch file (a zip archive) does"),
    ],
    ids=["csv", "empty", "random-bytes"],
)
def test_a_file_that_is_no_model_file_is_named_in_plain_words(
    tmp_path, snapshot, assert_unchanged, content, found
) -> None:
    model = tmp_path / "cases.csv"
    model.write_bytes(content)
    (tmp_path / "scan.nii.gz").write_bytes(b"never read: the model is read first")
    before = snapshot(tmp_path)
    message = micd_error("segment", tmp_path / "scan.nii.gz", "--model", model, "--out", tmp_path / "out")
    assert message == f"micd segment: error: {model} is not a micd model file (a PyTorch file): {found}"
    assert_unchanged(tmp_path, before)


def test_infer_names_a_csv_given_as_the_model_in_plain_words(tmp_path, snapshot, assert_unchanged) -> None:
    model, cases = tmp_path / "cases.csv", tmp_path / "test.txt"
    model.write_text("case_id,subset\namos_0001,validation\n")
    cases.write_text("amos_0001\n")
    before = snapshot(tmp_path)
    message = micd_error(
        "infer", "--model", model, "--data-dir", tmp_path / "data", "--cases", cases, "--out", tmp_path / "p"
    )
    assert message == (
        f"micd infer: error: {model} is not a micd model file (a PyTorch file): it does not start as a PyTorch "
        "file (a zip archive) does"
    )
    assert_unchanged(tmp_path, before)


def test_a_folder_given_as_the_model_is_named(tmp_path) -> None:
    with pytest.raises(DataError, match=f"^{tmp_path} is not a micd model file \\(a PyTorch file\\): it is a folder$"):
        read_model(tmp_path)


def test_a_truncated_model_file_is_named_damaged(tmp_path) -> None:
    whole = tmp_path / "whole.pt"
    save_model(model_dictionary(), whole)
    truncated = tmp_path / "model.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match="is not a micd model file that can be read: it is truncated or damaged"):
        read_model(truncated)


def test_a_model_file_of_plain_values_written_by_torch_save_still_loads(tmp_path) -> None:
    """A model.pt of an earlier micd (tensors and plain values, saved by torch.save directly)."""
    path = tmp_path / "model.pt"
    torch.save(model_dictionary(), path)
    assert read_model(path)["method"] == "supervised"


# ----- checkpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Four tiny preprocessed cases: a bright box of each class in a noisy volume."""
    root = tmp_path_factory.mktemp("preprocessed")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.zeros((16, 32, 32), np.uint8)
        label[4:10, 4:14, 4:14] = 1
        label[8:14, 16:26, 16:26] = 2
        image = (label / NUM_CLASSES + rng.normal(0, 0.1, label.shape)).astype(np.float32)
        np.save(root / "images" / f"case_{i}.npy", image)
        np.save(root / "labels" / f"case_{i}.npy", label)
    return root


def tiny_trainer(data_dir: Path, out: Path) -> Trainer:
    settings = tiny_settings(max_epochs=1, iterations_per_epoch=1, queue_length=2, window_stride=[8, 16, 16])
    data = TrainData(data_dir, labelled=["case_0", "case_1"], unlabelled=["case_2"], eval=["case_3"], num_classes=3)
    return Trainer("supervised", {}, settings, data, out, seed=0)


@pytest.fixture(scope="module")
def real_checkpoint(data_dir, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("run")
    assert tiny_trainer(data_dir, out).fit()
    return (out / "state" / "checkpoint.pt").read_bytes()


def without_key(checkpoint: bytes, key: str, tmp_path: Path) -> bytes:
    source = tmp_path / "source.pt"
    source.write_bytes(checkpoint)
    state = torch.load(source, weights_only=True)
    del state[key]
    torch.save(state, source)
    return source.read_bytes()


def with_numpy_state(checkpoint: bytes, tmp_path: Path) -> bytes:
    """A checkpoint as micd wrote them before weights-only loading: NumPy's state as an array."""
    source = tmp_path / "source.pt"
    source.write_bytes(checkpoint)
    state = torch.load(source, weights_only=True)
    state["random"]["numpy"] = np.random.get_state()
    torch.save(state, source)
    return source.read_bytes()


def with_payload(checkpoint: bytes, marker: Path, tmp_path: Path) -> bytes:
    source = tmp_path / "source.pt"
    source.write_bytes(checkpoint)
    state = torch.load(source, weights_only=True)
    state["run_identity"]["note"] = WritesMarker(marker)
    torch.save(state, source)
    assert unsafe_load_runs_it(source, marker)
    return source.read_bytes()


BAD_CHECKPOINTS = {
    "truncated": (lambda good, tmp: good[: len(good) // 2], "truncated or damaged"),
    "zero-bytes": (lambda good, tmp: b"", "it is empty"),
    "random-bytes": (lambda good, tmp: os.urandom(4096).replace(b"PK", b"pk"), "does not start as a PyTorch file"),
    "zip-without-data": (lambda good, tmp: zip_without_pickle(good, tmp), "truncated or damaged"),
    "missing-key": (lambda good, tmp: without_key(good, "optimisers", tmp), "it has no optimisers"),
    "numpy-array": (lambda good, tmp: with_numpy_state(good, tmp), "numpy"),
    "pickle-payload": (lambda good, tmp: with_payload(good, tmp / "PAYLOAD_RAN", tmp), "exec"),
}


def zip_without_pickle(good: bytes, tmp_path: Path) -> bytes:
    source, damaged = tmp_path / "source.pt", tmp_path / "damaged.pt"
    source.write_bytes(good)
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(damaged, "w") as zout:
        for name in zin.namelist():
            if not name.endswith("data.pkl"):
                zout.writestr(name, zin.read(name))
    return damaged.read_bytes()


@pytest.mark.parametrize("form", BAD_CHECKPOINTS)
@pytest.mark.slow
def test_a_bad_checkpoint_is_set_aside_and_training_starts_afresh(
    data_dir, real_checkpoint, tmp_path, capsys, snapshot, assert_unchanged, form
) -> None:
    make, why = BAD_CHECKPOINTS[form]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    content = make(real_checkpoint, scratch)
    run = tmp_path / "run"
    (run / "state").mkdir(parents=True)
    (run / "state" / "checkpoint.pt").write_bytes(content)
    (run / "state" / "best.pt").write_bytes(b"the best model of the progress set aside")
    data_before = snapshot(data_dir)
    assert tiny_trainer(data_dir, run).fit()
    log = capsys.readouterr().out
    assert f"setting aside {run / 'state' / 'checkpoint.pt'} as checkpoint.pt.corrupt-" in log
    assert why in log.split("setting aside", 1)[1].splitlines()[0]
    assert "training afresh" in log
    aside = list((run / "state").glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # renamed, not deleted
    assert torch.load(run / "model.pt", weights_only=True)["best_epoch"] is not None  # trained afresh
    assert not (scratch / "PAYLOAD_RAN").exists()
    assert_unchanged(data_dir, data_before)


def test_a_checkpoint_written_now_loads_weights_only_and_resumes_its_random_states(data_dir, tmp_path) -> None:
    trainer = tiny_trainer(data_dir, tmp_path / "run")
    trainer.state_dir.mkdir(parents=True)
    np.random.seed(5)
    trainer.save_checkpoint()
    expected = (np.random.random(3), torch.rand(2))
    np.random.seed(99)
    torch.manual_seed(99)
    resumed = tiny_trainer(data_dir, tmp_path / "run")
    assert resumed.resume()
    assert np.array_equal(np.random.random(3), expected[0]) and torch.equal(torch.rand(2), expected[1])


# ----- a full disk -------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A real 256 KiB file system (tmpfs), mounted for the test: needs root and mount rights."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to its last byte."""
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError as full:
        assert full.errno == errno.ENOSPC
    finally:
        os.close(descriptor)


def test_a_full_disk_while_writing_a_model_names_the_folder_and_keeps_the_earlier_file(small_filesystem) -> None:
    runs = small_filesystem / "run"
    runs.mkdir()
    (runs / "model.pt").write_bytes(b"the earlier model")
    fill(small_filesystem)
    with pytest.raises(DiskFullError) as error:
        save_model(model_dictionary(), runs / "model.pt")
    assert str(error.value).startswith(f"disk full: no space left in {runs} for model.pt")
    assert (runs / "model.pt").read_bytes() == b"the earlier model"
    assert sorted(p.name for p in runs.iterdir()) == ["model.pt"]  # no half-written temporary


def test_a_full_disk_while_writing_a_checkpoint_stops_naming_the_folder(
    data_dir, real_checkpoint, small_filesystem
) -> None:
    run = small_filesystem / "run"
    (run / "state").mkdir(parents=True)
    trainer = tiny_trainer(data_dir, run)
    fill(small_filesystem)
    with pytest.raises(DiskFullError, match=f"^disk full: no space left in {run / 'state'} for checkpoint.pt"):
        trainer.save_checkpoint()
    assert not list((run / "state").iterdir())


def test_a_full_disk_reaches_the_user_as_one_line(small_filesystem) -> None:
    fill(small_filesystem)
    message = micd_error(
        "synthesise", "--out", small_filesystem / "raw", "--n-train", "2", "--n-validation", "0", "--seed", "0"
    )
    assert message == (
        f"micd synthesise: error: disk full: no space left in {small_filesystem} for raw; the earlier raw there "
        "(if any) is unchanged: free some space there and run the command again"
    )
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["filler"]
