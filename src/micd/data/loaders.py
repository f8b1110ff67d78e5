"""TorchIO subjects from the preprocessed cases, and the patch queues that feed training.

Preprocessed cases are ``.npy`` arrays in (D, H, W) order; they are read lazily through a
TorchIO reader, so a queue only holds the volumes it is sampling from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchio as tio
from torch.utils.data import DataLoader


def _read_npy(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    array = np.load(path)
    return torch.from_numpy(np.ascontiguousarray(array))[None], np.eye(4)


def case_paths(data_dir: Path, case_id: str) -> tuple[Path, Path]:
    """Image and label files of one preprocessed case."""
    return (
        data_dir / "images" / f"{case_id}.npy",
        data_dir / "labels" / f"{case_id}.npy",
    )


def existing_case_paths(data_dir: Path, case_id: str, with_label: bool = True) -> tuple[Path, ...]:
    """:func:`case_paths` (the image only without ``with_label``), each checked to exist."""
    paths = case_paths(data_dir, case_id)[: 2 if with_label else 1]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"case {case_id}: preprocessed file {missing[0]} does not exist; "
            f"is {data_dir} the output of the preprocess rule for this data set?"
        )
    return paths


def data_fingerprint(data_dir: Path, with_labels: Iterable[str], images_only: Iterable[str] = ()) -> str:
    """SHA-256 of a run's preprocessed cases, in case-id order: image and label of each case,
    where the label of an ``images_only`` (unlabelled) case counts only if it is there. Two runs
    with the same fingerprint read the same data, whatever host or session preprocessed it."""
    labelled = set(with_labels)
    digest = hashlib.sha256()
    for case_id in sorted(labelled | set(images_only)):
        # a file the run reads (images, and labels of labelled cases) must be there
        existing_case_paths(data_dir, case_id, with_label=case_id in labelled)
        image, label = case_paths(data_dir, case_id)
        for path in (image, label) if label.is_file() else (image,):
            digest.update(case_id.encode() + b"\0" + path.parent.name.encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest()


def load_subject(data_dir: Path, case_id: str, with_label: bool = True) -> tio.Subject:
    paths = existing_case_paths(data_dir, case_id, with_label)
    images = {"image": tio.ScalarImage(paths[0], reader=_read_npy)}
    if with_label:
        images["label"] = tio.LabelMap(paths[1], reader=_read_npy)
    return tio.Subject(**images, case_id=case_id)


@dataclass
class QueueSettings:
    patch_size: tuple[int, int, int]
    samples_per_volume: int = 2
    queue_length: int = 16
    num_workers: int = 0


def labelled_sampler(
    patch_size: Sequence[int], label_probabilities: dict[int, float] | None = None
) -> tio.PatchSampler:
    """Uniform patches, or patches centred on a voxel of class c with probability ∝ ``label_probabilities[c]``."""
    if label_probabilities:
        return tio.LabelSampler(patch_size, label_name="label", label_probabilities=label_probabilities)
    return tio.UniformSampler(patch_size)


# The protocol's augmentation: random flips on the two in-plane axes (H, W).
AUGMENTATION = tio.RandomFlip(axes=(1, 2), flip_probability=0.5)


def zero_pad_to(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last ``len(size)`` axes of ``tensor`` at their far ends to at least ``size``."""
    missing = [max(0, p - n) for p, n in zip(size, tensor.shape[-len(size) :])]
    if not any(missing):
        return tensor
    # F.pad lists the last axis first: (W_before, W_after, H_before, H_after, D_before, D_after)
    return torch.nn.functional.pad(tensor, [a for m in reversed(missing) for a in (0, m)])


class _PadToPatch:
    """:func:`zero_pad_to` the patch size, for a (C, D, H, W) image of a subject.

    A class rather than a closure: subjects leave queue workers pickled, with their transforms.
    """

    def __init__(self, patch_size: Sequence[int]):
        self.patch_size = tuple(patch_size)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return zero_pad_to(tensor, self.patch_size)


def _smaller_than(image: tio.Image, patch_size: Sequence[int]) -> bool:
    """Whether an image is smaller than the patch along any axis, reading only a .npy header."""
    shape = np.load(image.path, mmap_mode="r").shape if image.path is not None else image.shape[1:]
    return any(n < p for n, p in zip(shape, patch_size))


def pad_to_patch(patch_size: Sequence[int]) -> tio.Transform:
    """Pad any volume smaller than the patch, so patches fit.

    Only volumes preprocessed to a target spacing can be smaller than the patch; image zeros are
    the bottom of the HU window and label zeros background.
    """
    return tio.Lambda(_PadToPatch(patch_size))


def patch_stream(
    subjects: list[tio.Subject],
    sampler: tio.PatchSampler,
    batch_size: int,
    settings: QueueSettings,
) -> Iterator[dict]:
    """An endless stream of patch batches; each pass over the queue reshuffles the subjects."""
    # Every TorchIO transform draws a random number, so the padding joins only where needed:
    # data on a fixed grid keeps the random stream (and the results) it had without it.
    needs_padding = any(_smaller_than(s["image"], settings.patch_size) for s in subjects)
    transform = tio.Compose([pad_to_patch(settings.patch_size), AUGMENTATION]) if needs_padding else AUGMENTATION
    dataset = tio.SubjectsDataset(subjects, transform=transform)
    queue = tio.Queue(
        dataset,
        max_length=max(settings.queue_length, settings.samples_per_volume),
        samples_per_volume=settings.samples_per_volume,
        sampler=sampler,
        num_workers=settings.num_workers,
    )
    loader = DataLoader(queue, batch_size=batch_size, num_workers=0, drop_last=False)
    while True:
        yield from loader
