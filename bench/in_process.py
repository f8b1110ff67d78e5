"""The workflow's stages in one process, for the bench tools that run without Snakemake (a lent
GPU machine has none): synthesise an archive, convert and preprocess it, split it, train a run
through the real engine, segment its test cases and score them; and random preprocessed cases
for the tools that time one training step.

Case ids come from the data: the preprocessed folder's ``cases.csv`` says which cases are the
archive's training cases and which its test cases (``subset``), as the workflow's split stage
reads them. Imported by its file name (``from in_process import ...``): the tools run as
``python bench/TOOL.py``, which puts ``bench/`` first on the module path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micd.data.classes import OrganClass, classes_for
from micd.data.convert import convert_archive
from micd.data.preprocess import preprocess, read_cases
from micd.data.splits import labelled_name, unlabelled_name
from micd.data.synthetic import generate_archive
from micd.evaluation.metrics import score_run
from micd.inference.infer import InferenceSettings, predict_cases
from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer
from micd.training.runs import training_cases

NUM_CLASSES = 16  # the random cases' classes: AMOS's and the synthetic set's


@dataclass(frozen=True)
class PreparedSet:
    """A preprocessed data set and its cases as ``cases.csv`` lists them."""

    preprocessed: Path
    classes: tuple[OrganClass, ...]
    train: list[str]  # the archive's training cases (``subset`` train)
    test: list[str]  # its validation cases, the test set (``subset`` validation)


def case_subsets(preprocessed: Path) -> tuple[list[str], list[str]]:
    """(training cases, test cases) of a preprocessed folder, from its ``cases.csv``."""
    rows = read_cases(preprocessed)
    return (
        [case for case, row in rows.items() if row["subset"] == "train"],
        [case for case, row in rows.items() if row["subset"] == "validation"],
    )


def synthetic_set(
    root: Path,
    n_train: int,
    n_test: int,
    seed: int,
    grid: tuple[int, int, int],
    family: str = "synthetic",
    **sizes: Any,
) -> PreparedSet:
    """The workflow's synthesise, convert and preprocess stages under ``root``: ``n_train``
    training and ``n_test`` test phantoms (``sizes``: ``generate_archive``'s in-plane and slice
    ranges), resized to ``grid``."""
    root = Path(root)
    generate_archive(root / "archive", n_train, n_test, seed=seed, **sizes)
    manifest = convert_archive(root / "archive", root / "converted")
    classes = classes_for(family)
    preprocess(manifest, root / "preprocessed", tuple(grid), num_classes=len(classes))
    train, test = case_subsets(root / "preprocessed")
    return PreparedSet(root / "preprocessed", classes, train, test)


@dataclass
class TrainedRun:
    """A run trained in this process: its folder, its trainer, its training log and wall time."""

    run_dir: Path
    trainer: Trainer
    log: list[dict]
    seconds: float

    @property
    def finite_losses(self) -> bool:
        return all(row["losses"]["loss"] is not None and math.isfinite(row["losses"]["loss"]) for row in self.log)

    @property
    def skipped_steps(self) -> int:
        return sum("skipped" in row for row in self.log)

    @property
    def amp_dtype(self) -> str | None:
        return amp_name(self.trainer)


def amp_name(trainer: Trainer) -> str | None:
    """The trainer's mixed-precision dtype by name (``float16``), None in full precision."""
    return str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else None


def train_run(
    method: str,
    method_settings: dict[str, Any],
    settings: TrainSettings,
    data: PreparedSet,
    splits: dict[str, list[str]],
    ratio: int,
    run_dir: Path,
    run_info: dict[str, Any] | None = None,
    seed: int = 0,
) -> TrainedRun:
    """Train ``method`` on the ``ratio`` % split as the train stage does (the upper bound on every
    training case), validating on the split's eval cases."""
    labelled, unlabelled = training_cases(
        method, splits["train"], splits[labelled_name(ratio)], splits[unlabelled_name(ratio)]
    )
    train_data = TrainData(data.preprocessed, labelled, unlabelled, splits["eval"], len(data.classes))
    started = time.perf_counter()
    trainer = Trainer(method, method_settings, settings, train_data, run_dir, seed=seed, run_info=run_info)
    trainer.fit()
    seconds = time.perf_counter() - started
    log = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]
    return TrainedRun(Path(run_dir), trainer, log, seconds)


def score_test_cases(
    run: TrainedRun, data: PreparedSet, case_ids: list[str], keys: dict[str, Any], device: str
) -> pd.DataFrame:
    """The infer and metrics stages: the run's best model segments ``case_ids`` on the
    preprocessed grid (``predictions/`` in its folder), scored per case and class (``metrics.csv``)."""
    predictions = run.run_dir / "predictions"
    model = run.run_dir / "model.pt"
    predict_cases(model, data.preprocessed, case_ids, predictions, InferenceSettings(original_grid=False), device)
    return score_run(predictions, data.preprocessed, case_ids, data.classes, keys, run.run_dir / "metrics.csv")


def random_cases(root: Path, grid: tuple[int, int, int], n: int, num_classes: int = NUM_CLASSES) -> list[str]:
    """``n`` preprocessed cases of random intensities and labels on ``grid`` (``images/``,
    ``labels/``): what one training step reads, where the images' content does not matter."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        case_id = f"case_{i:03d}"
        np.save(root / "images" / f"{case_id}.npy", rng.random(grid, dtype=np.float32))
        np.save(root / "labels" / f"{case_id}.npy", rng.integers(0, num_classes, grid, dtype=np.uint8))
        ids.append(case_id)
    return ids
