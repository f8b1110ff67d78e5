"""The model file, ``model.pt``: written by ``micd train``, read by ``micd infer``,
``micd segment``, the report's tools and ``bench/``. Its format is written and read here only.

A dictionary saved with ``torch.save`` that holds only tensors and plain values (numbers, strings,
lists, dicts, None), so that it loads with ``weights_only=True``:

    format           MODEL_FORMAT (files written before this key existed are format 0)
    method           the registered method (format 0: ``provenance.method``)
    method_state     what inference needs of the method (``Method.inference_state_dict``)
    method_settings  the method's settings, every field (``Method.Settings``)
    train_settings   the run's train settings, every field (``micd.settings.TrainSettings``)
    num_classes      classes with the background
    best_epoch, best_eval_dice   the selected checkpoint's epoch and validation Dice (%)
    provenance       the run (dataset, family, ratio, variant, method, seed, labelled cases and
                     split origin, data digest, compute), the code version, packages and host
    preprocessing    how the training images were preprocessed, which ``micd segment`` repeats
                     on a new scan (``micd.data.preprocess.preprocessing_record``; None for
                     a data folder without its ``stats.json``)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micd.errors import case_error
from micd.provenance import atomic_torch_save
from micd.torch_files import load_weights_only

if TYPE_CHECKING:
    import torch

    from micd.methods import Method
    from micd.settings import TrainSettings

MODEL_FORMAT = 1
# what every model file of any format has; `micd segment` needs more (micd.inference.own_scans)
REQUIRED_KEYS = ("method_state", "method_settings", "train_settings", "num_classes", "provenance")


def model_record(
    *,
    method: str,
    method_state: Mapping[str, Any],
    method_settings: Mapping[str, Any],
    train_settings: Mapping[str, Any],
    num_classes: int,
    best_epoch: int | None,
    best_eval_dice: float | None,
    provenance: Mapping[str, Any],
    preprocessing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The dictionary ``save_model`` writes (see the module docstring)."""
    return {
        "format": MODEL_FORMAT,
        "method": method,
        "method_state": method_state,
        "method_settings": method_settings,
        "train_settings": train_settings,
        "num_classes": num_classes,
        "best_epoch": best_epoch,
        "best_eval_dice": best_eval_dice,
        "provenance": provenance,
        "preprocessing": preprocessing,
    }


def save_model(record: Mapping[str, Any], path: Path) -> None:
    """Write a model file whole or not at all."""
    atomic_torch_save(dict(record), Path(path))


def read_model(path: Path, device: "torch.device | str" = "cpu") -> dict[str, Any]:
    """A model file's dictionary, its tensors on ``device``, with ``method`` set for files of
    format 0. A file that is not a model file, or holds anything but tensors and plain values, is an
    error naming it and what it lacks (micd.torch_files)."""
    path = Path(path)
    saved = load_weights_only(path, device, "a micd model file")  # never runs code the file names
    if not isinstance(saved, Mapping):
        raise case_error(None, path, "expected a model.pt written by `micd train`, found no dictionary")
    missing = [key for key in REQUIRED_KEYS if saved.get(key) is None]
    if missing:
        raise missing_key_error(path, missing[0])
    saved = dict(saved)
    if "method" not in saved:
        if "method" not in saved["provenance"]:
            raise missing_key_error(path, "method")
        saved["method"] = saved["provenance"]["method"]
    return saved


def missing_key_error(path: Path, key: str):
    return case_error(
        None,
        path,
        f"the model file has no {key!r}; this needs a model.pt written by `micd train` of this version "
        "(train the run again to get one)",
    )


def method_from_record(saved: Mapping[str, Any], device: "torch.device") -> tuple["Method", "TrainSettings"]:
    """The method (in eval mode, on ``device``) and train settings of a read model file."""
    from micd.methods import build_method
    from micd.settings import TrainSettings

    settings = TrainSettings.from_dict(saved["train_settings"])
    method = build_method(
        saved["method"],
        saved["method_settings"],
        saved["num_classes"],
        settings.n_filters,
        settings.dropout,
        saved=True,
    )
    method.load_inference_state_dict(saved["method_state"])
    return method.to(device).eval(), settings


def load_model(path: Path, device: "torch.device") -> tuple["Method", "TrainSettings"]:
    """The method and train settings of the model file at ``path``."""
    return method_from_record(read_model(path, device), device)
