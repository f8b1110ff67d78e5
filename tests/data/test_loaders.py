"""The patch feed that trains every method (micd.data.loaders): what a patch is and how patches
are distributed, checked on draws from the real stream."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from micd.data.loaders import (
    CaseVolumes,
    QueueSettings,
    UniformPatches,
    labelled_sampler,
    patch_stream,
    stack_patches,
)

SIGNIFICANCE = 1e-3  # a correct feed fails a test of this level once in a thousand seeds


def write_cases(root: Path, volumes: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for case_id, (image, label) in volumes.items():
        np.save(root / "images" / f"{case_id}.npy", image.astype(np.float32))
        np.save(root / "labels" / f"{case_id}.npy", label.astype(np.uint8))
    return root


def numbered_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """Every voxel's value is its flat index: a patch tells where it came from and how it was flipped."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def draw(cases: CaseVolumes, sampler, settings: QueueSettings, n: int, seed: int = 0, batch: int = 8) -> list:
    torch.manual_seed(seed)
    stream = patch_stream(cases, sampler, batch, settings)
    batches = []
    while sum(len(b.cases) for b, _, _ in batches) < n:
        b = next(stream)
        # copies: a batch's tensors are valid until the next batch is asked for
        images = stack_patches(b.images).clone()
        labels = stack_patches(b.labels).clone() if b.labels is not None else None
        batches.append((b, images, labels))
    return batches


def all_patches(batches) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[torch.Tensor], list]:
    locations = np.concatenate([b.locations for b, _, _ in batches])
    flipped = np.concatenate([b.flipped for b, _, _ in batches])
    cases = np.concatenate([b.cases for b, _, _ in batches])
    images = [image for _, images, _ in batches for image in images]
    labels = [label for _, _, labels in batches for label in (labels if labels is not None else [None] * len(images))]
    return locations, flipped, cases, images, labels


def test_a_patch_is_the_crop_at_its_location_flipped_as_recorded(tmp_path) -> None:
    shape, patch = (12, 20, 24), (8, 8, 16)
    label = (numbered_volume(shape) % 3).astype(np.uint8)
    cases = CaseVolumes(write_cases(tmp_path, {"a": (numbered_volume(shape), label)}), ["a"])
    batches = draw(cases, UniformPatches(patch), QueueSettings(patch, 1, 4), 64)
    for location, flips, _, image, label_patch in zip(*all_patches(batches)):
        crop = tuple(slice(o, e) for o, e in zip(location[:3], location[3:]))
        expected = numbered_volume(shape)[crop]
        axes = [axis for axis, on in zip((1, 2), flips) if on]
        expected = np.flip(expected, axes) if axes else expected
        assert torch.equal(image[0], torch.from_numpy(expected.copy()))
        assert torch.equal(label_patch[0], torch.from_numpy((expected % 3).astype(np.uint8)))


def test_without_flips_no_patch_is_flipped(tmp_path) -> None:
    shape, patch = (12, 20, 24), (8, 8, 16)
    cases = CaseVolumes(write_cases(tmp_path, {"a": (numbered_volume(shape), np.zeros(shape))}), ["a"])
    batches = draw(cases, UniformPatches(patch), QueueSettings(patch, 1, 4, flips=False), 64)
    for location, flips, _, image, _ in zip(*all_patches(batches)):
        assert not flips.any()
        crop = tuple(slice(o, e) for o, e in zip(location[:3], location[3:]))
        assert torch.equal(image[0], torch.from_numpy(numbered_volume(shape)[crop].copy()))


def test_each_flip_axis_fires_with_probability_one_half_independently(tmp_path) -> None:
    shape, patch = (8, 16, 16), (8, 8, 8)
    cases = CaseVolumes(write_cases(tmp_path, {"a": (np.zeros(shape), np.zeros(shape))}), ["a"])
    flipped = all_patches(draw(cases, UniformPatches(patch), QueueSettings(patch, 2, 16), 4000, batch=20))[1]
    n = len(flipped)
    for axis in (0, 1):
        assert stats.binomtest(int(flipped[:, axis].sum()), n, 0.5).pvalue > SIGNIFICANCE
    both = np.bincount(flipped[:, 0] * 2 + flipped[:, 1], minlength=4)
    assert stats.chisquare(both).pvalue > SIGNIFICANCE  # the four combinations equally often


def test_uniform_origins_cover_every_valid_position_evenly(tmp_path) -> None:
    shape, patch = (12, 20, 24), (8, 8, 16)
    cases = CaseVolumes(write_cases(tmp_path, {"a": (np.zeros(shape), np.zeros(shape))}), ["a"])
    locations = all_patches(draw(cases, UniformPatches(patch), QueueSettings(patch, 2, 16), 3000, batch=20))[0]
    for axis, (n, p) in enumerate(zip(shape, patch)):
        counts = np.bincount(locations[:, axis], minlength=n - p + 1)
        assert len(counts) == n - p + 1 and counts.all()  # both ends drawn, nothing beyond
        assert stats.chisquare(counts).pvalue > SIGNIFICANCE


def test_class_weighted_centres_follow_the_class_probabilities(tmp_path) -> None:
    """Classes at the rates the weights give, among the classes a case has where a patch can be
    centred; within a class, every voxel alike (TorchIO's LabelSampler)."""
    shape, patch = (10, 16, 16), (4, 8, 8)
    label_a = np.zeros(shape, np.uint8)
    label_a[3:6, 5:9, 5:9] = 1  # 48 voxels, all at valid centres
    label_a[6, 10, 10:12] = 2  # 2 voxels
    label_a[0, 0, 0] = 3  # never a valid centre: class 3 is absent for sampling in case a
    label_b = np.zeros(shape, np.uint8)
    label_b[4:6, 4:12, 4:12] = 1  # case b has no class 2
    volumes = {"a": (np.zeros(shape), label_a), "b": (np.zeros(shape), label_b)}
    cases = CaseVolumes(write_cases(tmp_path, volumes), ["a", "b"])
    weights = {0: 1.0, 1: 2.0, 2: 5.0, 3: 4.0}
    sampler = labelled_sampler(patch, weights)
    locations, _, case_of, _, _ = all_patches(draw(cases, sampler, QueueSettings(patch, 1, 16), 4000, batch=20))
    centres = locations[:, :3] + np.array(patch) // 2
    for index, label, present in ((0, label_a, [0, 1, 2]), (1, label_b, [0, 1])):
        mine = centres[case_of == index]
        classes = label[tuple(mine.T)]
        expected = np.array([weights[c] for c in present])
        observed = np.array([(classes == c).sum() for c in present])
        assert observed.sum() == len(mine)  # never an absent or zero-weight class
        assert stats.chisquare(observed, expected / expected.sum() * len(mine)).pvalue > SIGNIFICANCE
    in_class_one = centres[(case_of == 0) & (label_a[tuple(centres.T)] == 1)]
    voxel_counts = np.unique(np.ravel_multi_index(in_class_one.T, shape), return_counts=True)[1]
    assert len(voxel_counts) == 48 and stats.chisquare(voxel_counts).pvalue > SIGNIFICANCE


def test_a_case_without_a_weighted_class_at_any_valid_centre_is_named(tmp_path) -> None:
    shape, patch = (10, 16, 16), (4, 8, 8)
    label = np.zeros(shape, np.uint8)
    label[0, 0, 0] = 1
    cases = CaseVolumes(write_cases(tmp_path, {"corner": (np.zeros(shape), label)}), ["corner"])
    with pytest.raises(ValueError, match="case corner: no voxel of a class with a sampling weight"):
        next(patch_stream(cases, labelled_sampler(patch, {1: 1.0}), 1, QueueSettings(patch, 1, 4)))


def test_cases_smaller_than_the_patch_give_patches_zero_padded_at_the_far_end(tmp_path) -> None:
    patch = (16, 16, 16)
    volumes = {"small": (np.ones((10, 20, 30)), np.ones((10, 20, 30)))}
    cases = CaseVolumes(write_cases(tmp_path, volumes), ["small"])
    for sampler in (UniformPatches(patch), labelled_sampler(patch, {0: 1.0, 1: 1.0})):
        locations, _, _, images, labels = all_patches(draw(cases, sampler, QueueSettings(patch, 1, 4), 16))
        assert (locations[:, 0] == 0).all()  # the one position along D
        for image, label in zip(images, labels):
            assert image.shape == label.shape == (1, 16, 16, 16)
            assert image[:, :10].all() and not image[:, 10:].any() and not label[:, 10:].any()


def test_workers_deliver_the_stream_of_the_main_process(tmp_path) -> None:
    """The same patches in the same order for any number of workers: every random draw is the
    main process's, so resuming on a node with another core count trains the same run."""
    rng = np.random.default_rng(0)
    shapes = {"a": (12, 20, 24), "b": (10, 24, 20), "small": (6, 20, 24)}
    volumes = {k: (rng.random(s), rng.integers(0, 3, s)) for k, s in shapes.items()}
    cases = CaseVolumes(write_cases(tmp_path, volumes), list(shapes))
    patch = (8, 16, 16)
    for sampler in (UniformPatches(patch), labelled_sampler(patch, {0: 1.0, 1: 3.0, 2: 2.0})):
        streams = [draw(cases, sampler, QueueSettings(patch, 2, 5, workers), 40, seed=3, batch=3) for workers in (0, 2)]
        for (a, images_a, labels_a), (b, images_b, labels_b) in zip(*streams):
            assert np.array_equal(a.locations, b.locations) and np.array_equal(a.flipped, b.flipped)
            assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def test_cases_travel_to_workers_without_their_mappings_and_locations_are_computed_once(tmp_path) -> None:
    shape = (10, 16, 16)
    cases = CaseVolumes(write_cases(tmp_path, {"a": (np.zeros(shape), np.ones(shape))}), ["a"])
    cases.arrays(0)
    first = cases.class_locations((4, 8, 8))
    assert cases.class_locations((4, 8, 8)) is first
    copy = pickle.loads(pickle.dumps(cases))
    assert copy._mapped == {} and copy.class_locations((4, 8, 8))[0].box == (7, 9, 9)
    assert isinstance(copy.arrays(0)[0], np.memmap)
