"""Tests of the TorchIO patch queues that feed training (micd.data.loaders)."""

from __future__ import annotations

import pickle

import torch
import torchio as tio

from micd.data.loaders import QueueSettings, pad_to_patch, patch_stream


def _subject(shape: tuple[int, int, int]) -> tio.Subject:
    return tio.Subject(
        image=tio.ScalarImage(tensor=torch.rand(1, *shape)),
        label=tio.LabelMap(tensor=torch.ones(1, *shape, dtype=torch.uint8)),
    )


def test_volumes_smaller_than_the_patch_are_zero_padded_at_the_far_end() -> None:
    padded = pad_to_patch((16, 16, 16))(_subject((10, 20, 30)))
    assert padded.image.shape == padded.label.shape == (1, 16, 20, 30)
    assert padded.label.data[:, :10].all() and not padded.label.data[:, 10:].any()
    untouched = pad_to_patch((8, 8, 8))(_subject((10, 20, 30)))
    assert untouched.image.shape == (1, 10, 20, 30)
    # queue workers send subjects back pickled, transform history included (a closure hung a GPU run)
    assert pickle.loads(pickle.dumps(padded)).image.shape == (1, 16, 20, 30)


def test_queue_workers_deliver_padded_patches() -> None:
    settings = QueueSettings((16, 16, 16), samples_per_volume=2, queue_length=4, num_workers=2)
    stream = patch_stream(
        [_subject((10, 20, 30)), _subject((12, 16, 16))], tio.UniformSampler((16, 16, 16)), 2, settings
    )
    batch = next(stream)
    assert batch["image"][tio.DATA].shape == (2, 1, 16, 16, 16)
