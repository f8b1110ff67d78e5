"""The model file (micd.model_file): one writer, one reader, files of the earlier format read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from micd.errors import DataError
from micd.methods import build_method
from micd.model_file import MODEL_FORMAT, load_model, model_record, read_model, save_model
from micd.settings import TrainSettings

NUM_CLASSES = 3


def record_of(method_name: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    settings = TrainSettings(n_filters=2, patch_size=[16, 16, 16])
    method = build_method(method_name, {}, NUM_CLASSES, settings.n_filters, settings.dropout)
    return model_record(
        method=method_name,
        method_state=method.inference_state_dict(),
        method_settings={},
        train_settings={"n_filters": 2, "patch_size": [16, 16, 16]},
        num_classes=NUM_CLASSES,
        best_epoch=3,
        best_eval_dice=41.5,
        provenance={"method": method_name, "dataset": "tiny", "seed": seed},
        preprocessing=None,
    )


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_saved_model_loads_as_the_method_it_was_with_its_settings(tmp_path: Path) -> None:
    record = record_of("dhc")
    save_model(record, tmp_path / "model.pt")
    saved = read_model(tmp_path / "model.pt")
    assert saved["format"] == MODEL_FORMAT and saved["method"] == "dhc"
    method, train = load_model(tmp_path / "model.pt", torch.device("cpu"))
    assert type(method).__name__ == type(build_method("dhc", {}, NUM_CLASSES, 2)).__name__
    assert not method.training and train.n_filters == 2 and train.patch_size == [16, 16, 16]
    assert same_weights(method.inference_state_dict(), record["method_state"])
    assert not list(tmp_path.glob("*.tmp*"))  # written whole


def test_a_file_of_the_earlier_format_takes_its_method_from_the_provenance(tmp_path: Path) -> None:
    """micd before the model file had a format key kept the method under provenance only."""
    record = record_of("supervised")
    del record["format"], record["method"]
    torch.save(record, tmp_path / "model.pt")
    assert read_model(tmp_path / "model.pt")["method"] == "supervised"
    method, _ = load_model(tmp_path / "model.pt", torch.device("cpu"))
    assert same_weights(method.inference_state_dict(), record["method_state"])


def test_the_top_level_method_is_what_is_built(tmp_path: Path) -> None:
    """The method key decides, not the provenance (which records the run)."""
    record = record_of("supervised")
    record["provenance"]["method"] = "something_else"
    save_model(record, tmp_path / "model.pt")
    assert read_model(tmp_path / "model.pt")["method"] == "supervised"
    load_model(tmp_path / "model.pt", torch.device("cpu"))


@pytest.mark.parametrize(
    "content, expected",
    [
        ([1, 2, 3], "expected a model.pt written by `micd train`, found no dictionary"),
        ({"method_state": {}}, "the model file has no 'method_settings'"),
    ],
)
def test_a_file_that_is_no_model_is_named_with_what_it_lacks(tmp_path: Path, content, expected) -> None:
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(DataError, match=f"file {path}: {expected}".replace("(", r"\(").replace(")", r"\)")):
        read_model(path)
    path.write_text("not a zip")
    with pytest.raises(DataError, match=f"{path} is not a micd model file \\(a PyTorch file\\)"):
        read_model(path)
    record = record_of("supervised")
    del record["method"], record["provenance"]["method"]
    torch.save(record, path)
    with pytest.raises(DataError, match="the model file has no 'method'"):
        read_model(path)
