"""A tiny training set-up shared by the training-loop tests and the methods' resume tests:
six small preprocessed cases, settings that train in seconds, and a trainer stopped mid-run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer

NUM_CLASSES = 4


def write_tiny_cases(root: Path) -> Path:
    """Six tiny preprocessed cases in ``root``: a bright box of each class in a noisy volume."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        label = np.zeros((20, 40, 40), np.uint8)
        for c in range(1, NUM_CLASSES):
            z, y, x = rng.integers(2, 12), rng.integers(2, 30), rng.integers(2, 30)
            label[z : z + 6, y : y + 8, x : x + 8] = c
        image = (label / NUM_CLASSES + rng.normal(0, 0.1, label.shape)).astype(np.float32)
        np.save(root / "images" / f"case_{i}.npy", image)
        np.save(root / "labels" / f"case_{i}.npy", label)
    return root


def tiny_settings(**overrides) -> TrainSettings:
    values = dict(
        max_epochs=3,
        iterations_per_epoch=2,
        n_filters=2,
        patch_size=[16, 32, 32],
        batch_labelled=1,
        batch_unlabelled=1,
        queue_length=4,
        validate_every=1,
        window_stride=[4, 8, 8],
        checkpoint_every=1000,
        early_stop_patience=None,
    )
    values.update(overrides)
    return TrainSettings(**values)


def tiny_data(data_dir: Path) -> TrainData:
    return TrainData(
        data_dir,
        labelled=["case_0", "case_1"],
        unlabelled=["case_2", "case_3", "case_4"],
        eval=["case_5"],
        num_classes=NUM_CLASSES,
    )


class StopAt(Trainer):
    """A trainer 'killed' right after a given iteration (a checkpoint is written first)."""

    stop_at = 3

    def step(self, streams, lr):
        row = super().step(streams, lr)
        if self.iteration == self.stop_at:
            self.request_stop()
        return row


def final_state(out_dir: Path) -> dict:
    return torch.load(out_dir / "state" / "checkpoint.pt", weights_only=True)["method"]
