"""The preprocessed cases, and the patch feed that trains on them.

Preprocessed cases are ``.npy`` arrays in (D, H, W) order. A training job memory-maps each case
(:class:`CaseVolumes`): every process that cuts patches maps the same files, whose pages the
operating system reads once and keeps in its page cache, shared by all of the job's processes; no
process holds a copy of a whole volume. A patch costs one copy of its own voxels out of the mapped
case, flipped on the way (the protocol's flips act on the patch: docs/protocol.md), and a
class-weighted patch centre is drawn from the case's class locations, computed once per job.

TorchIO's :class:`~torchio.Queue` is the patch queue. Its worker processes cut the patches of one
case visit each; the main process only shuffles finished patches and stacks them into batches.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchio as tio
from torch.utils.data import DataLoader


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


def zero_pad_to(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last ``len(size)`` axes of ``tensor`` at their far ends to at least ``size``."""
    missing = [max(0, p - n) for p, n in zip(size, tensor.shape[-len(size) :])]
    if not any(missing):
        return tensor
    # F.pad lists the last axis first: (W_before, W_after, H_before, H_after, D_before, D_after)
    return torch.nn.functional.pad(tensor, [a for m in reversed(missing) for a in (0, m)])


@dataclass
class QueueSettings:
    patch_size: tuple[int, int, int]
    samples_per_volume: int = 2
    queue_length: int = 16
    num_workers: int = 0
    flips: bool = True  # the protocol's random flips of H and W; off: DHC's published runs (docs/protocol.md)


# The protocol's augmentation: each in-plane axis (H, W: array axes 1 and 2) flipped with probability 0.5.
FLIP_AXES = (1, 2)
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class ClassLocations:
    """Which valid patch origins of one case put a voxel of each class at the patch's centre.

    A patch at origin ``o`` has its centre voxel at ``o + patch_size // 2`` (TorchIO's convention),
    so the valid origins form a box of ``shape - patch_size + 1`` per axis. ``order`` lists the
    box's flat indices grouped by the class of their centre voxel: class ``c`` owns
    ``order[starts[c]:starts[c + 1]]``.
    """

    box: tuple[int, int, int]
    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, label: np.ndarray, patch_size: Sequence[int]) -> "ClassLocations":
        label = zero_pad_to(torch.from_numpy(np.array(label)), patch_size).numpy()  # a case smaller than the patch
        box = tuple(n - p + 1 for n, p in zip(label.shape, patch_size))
        centres = label[tuple(slice(p // 2, p // 2 + b) for p, b in zip(patch_size, box))].ravel()
        counts = np.bincount(centres)
        return cls(box, np.argsort(centres, kind="stable").astype(np.int32), np.concatenate([[0], np.cumsum(counts)]))

    def counts(self) -> np.ndarray:
        return np.diff(self.starts)


class CaseVolumes:
    """A list of preprocessed cases, each memory-mapped once in every process that reads it.

    Pickling (to a worker started by spawn or forkserver) keeps the paths and the class locations,
    not the mappings: each process maps the files itself, so no volume is ever copied whole.
    """

    def __init__(self, data_dir: Path, case_ids: Sequence[str], with_label: bool = True) -> None:
        self.case_ids = list(case_ids)
        self.with_label = with_label
        self.paths = [existing_case_paths(data_dir, c, with_label) for c in self.case_ids]
        self._mapped: dict[int, tuple[np.ndarray, ...]] = {}
        self._class_locations: dict[tuple[int, ...], list[ClassLocations]] = {}

    def __len__(self) -> int:
        return len(self.case_ids)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and label (None without labels) of case ``index``, memory-mapped read-only."""
        if index not in self._mapped:
            self._mapped[index] = tuple(np.load(path, mmap_mode="r") for path in self.paths[index])
        mapped = self._mapped[index]
        return mapped[0], mapped[1] if self.with_label else None

    def class_locations(self, patch_size: Sequence[int]) -> list[ClassLocations]:
        """Every case's :class:`ClassLocations` for ``patch_size``, computed on the first call."""
        key = tuple(patch_size)
        if key not in self._class_locations:
            if not self.with_label:
                raise ValueError("class-weighted patches need labels; these cases were opened without them")
            self._class_locations[key] = [ClassLocations.of(self.arrays(i)[1], key) for i in range(len(self))]
        return self._class_locations[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mapped": {}}


class UniformPatches:
    """Patch origins uniform over every position where the patch fits (TorchIO's ``UniformSampler``)."""

    def __init__(self, patch_size: Sequence[int]) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)

    def prepare(self, cases: CaseVolumes) -> None:
        """Compute, in the main process and before any worker starts, what :meth:`origin` reads."""

    def origin(self, cases: CaseVolumes, index: int, rng: np.random.Generator) -> np.ndarray:
        shape = cases.arrays(index)[0].shape
        return rng.integers(0, [max(n - p, 0) + 1 for n, p in zip(shape, self.patch_size)])


class ClassWeightedPatches(UniformPatches):
    """Patches centred on a voxel of class ``c`` with probability proportional to
    ``label_probabilities[c]`` among the classes the case has at valid centres, the voxel uniform
    among that class's (TorchIO's ``LabelSampler``), drawn from the case's :class:`ClassLocations`."""

    def __init__(self, patch_size: Sequence[int], label_probabilities: dict[int, float]) -> None:
        super().__init__(patch_size)
        self.label_probabilities = dict(label_probabilities)
        self.weights = np.zeros(max(self.label_probabilities) + 1)
        for c, weight in self.label_probabilities.items():
            self.weights[c] = weight

    def prepare(self, cases: CaseVolumes) -> None:
        cases.class_locations(self.patch_size)

    def origin(self, cases: CaseVolumes, index: int, rng: np.random.Generator) -> np.ndarray:
        locations = cases.class_locations(self.patch_size)[index]
        counts = locations.counts()
        n = min(len(counts), len(self.weights))
        weights = self.weights[:n] * (counts[:n] > 0)
        if not weights.sum() > 0:
            raise ValueError(
                f"case {cases.case_ids[index]}: no voxel of a class with a sampling weight "
                f"({self.label_probabilities}) lies where a patch of {list(self.patch_size)} can be centred"
            )
        c = rng.choice(n, p=weights / weights.sum())
        voxel = locations.order[locations.starts[c] + rng.integers(counts[c])]
        return np.array(np.unravel_index(voxel, locations.box))


def labelled_sampler(patch_size: Sequence[int], label_probabilities: dict[int, float] | None = None) -> UniformPatches:
    """Uniform patches, or patches centred on a voxel of class c with probability ∝ ``label_probabilities[c]``."""
    if label_probabilities:
        return ClassWeightedPatches(patch_size, label_probabilities)
    return UniformPatches(patch_size)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class PatchSlots:
    """Patch-sized slots in one block of shared memory, which the main process and every queue
    worker map once. A worker cuts a patch into a free slot and hands on only the slot's number;
    the main process copies the patch out of the slot into its batch and frees the slot. A tensor
    in shared memory of its own per patch would cost the main process more than cutting the
    patch itself: a file descriptor to receive, fresh pages to map, fault in and unmap."""

    def __init__(self, count: int, layout: Sequence[tuple[Sequence[int], np.dtype]]) -> None:
        self.layout = [(tuple(shape), _torch_dtype(dtype)) for shape, dtype in layout]
        sizes = [int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.layout]
        self.offsets = np.concatenate([[0], np.cumsum([-(-n // 64) * 64 for n in sizes])])  # 64-byte aligned
        self.block = torch.empty((count, int(self.offsets[-1])), dtype=torch.uint8).share_memory_()
        self.free = multiprocessing.SimpleQueue()
        self.release(range(count))

    def take(self) -> int:
        """A free slot's number; waits for one (the main process frees them as it batches)."""
        return self.free.get()

    def release(self, slots: Iterable[int]) -> None:
        for slot in slots:
            self.free.put(slot)

    def views(self, slot: int) -> list[torch.Tensor]:
        """The slot's tensors, as ``layout`` gives them."""
        row = self.block[slot]
        return [
            row[int(start) : int(start) + int(np.prod(shape)) * dtype.itemsize].view(dtype).view(shape)
            for (shape, dtype), start in zip(self.layout, self.offsets)
        ]


def cut_patch(
    volume: np.ndarray, origin: Sequence[int], patch_size: Sequence[int], flipped: Sequence[bool], out: np.ndarray
) -> None:
    """Copy the patch of ``volume`` at ``origin`` into ``out``, flipped along H and W where
    ``flipped`` says, in one pass over the patch's voxels; zeros beyond the far ends of a case
    smaller than the patch."""
    region = volume[tuple(slice(o, o + p) for o, p in zip(origin, patch_size))]
    if region.shape != tuple(patch_size):
        padded = np.zeros(patch_size, volume.dtype)
        padded[tuple(slice(0, n) for n in region.shape)] = region
        region = padded
    np.copyto(out, region[:, slice(None, None, -1 if flipped[0] else 1), slice(None, None, -1 if flipped[1] else 1)])


@dataclass(frozen=True)
class PatchCut:
    """A patch to cut when it is batched: in the main process, without workers, the patch goes
    from the mapped case straight into the batch, one copy of its voxels."""

    volume: np.ndarray
    origin: np.ndarray
    patch_size: tuple[int, int, int]
    flipped: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, *self.patch_size)

    @property
    def dtype(self) -> torch.dtype:
        return _torch_dtype(self.volume.dtype)

    def copy_into(self, out: np.ndarray) -> None:
        cut_patch(self.volume, self.origin, self.patch_size, self.flipped, out[0])


Patch = PatchCut | torch.Tensor  # a patch not cut yet, or one a worker cut, (1, D, H, W)


@dataclass
class PatchBatch:
    """A batch of patches, unstacked: the consumer copies them once, into the batch it needs
    (:func:`stack_patches`). They stay valid until the stream is asked for the next batch."""

    images: list[Patch]
    labels: list[Patch] | None
    locations: np.ndarray  # (B, 6): origin and far end of each patch in its case, as TorchIO's LOCATION
    flipped: np.ndarray  # (B, 2): whether H and W were flipped
    cases: list[int]  # index of each patch's case in its CaseVolumes
    slots: list[int]  # the PatchSlots the tensors are views of, freed when the next batch is asked for


def stack_patches(patches: Sequence[Patch], pin_memory: bool = False) -> torch.Tensor:
    """One (B, 1, D, H, W) tensor of patches, in page-locked memory with ``pin_memory`` (for
    copies to a GPU that overlap its work)."""
    out = torch.empty((len(patches), *patches[0].shape), dtype=patches[0].dtype, pin_memory=pin_memory)
    for patch, row in zip(patches, out):
        if isinstance(patch, PatchCut):
            patch.copy_into(row.numpy())
        else:
            row.copy_(patch)  # torch's copy: twice as fast as NumPy's into fresh memory, measured
    return out


class CaseVisits(torch.utils.data.Dataset):
    """The queue's subjects: item ``(index, seed)`` is one visit to case ``index``, the
    ``samples_per_volume`` patches of it, every random draw from ``seed``. The queue's workers,
    where it has any, cut the patches into :class:`PatchSlots`; without workers they are cut as
    they are batched (:class:`PatchCut`)."""

    def __init__(
        self, cases: CaseVolumes, sampler: UniformPatches, settings: QueueSettings, slots: PatchSlots | None = None
    ) -> None:
        self.cases, self.sampler, self.settings, self.slots = cases, sampler, settings, slots

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, visit: tuple[int, int]) -> list[dict]:
        index, seed = visit
        rng = np.random.default_rng(seed)
        return [self.patch(index, rng) for _ in range(self.settings.samples_per_volume)]

    def patch(self, index: int, rng: np.random.Generator) -> dict:
        patch_size = self.settings.patch_size
        origin = self.sampler.origin(self.cases, index, rng)
        flipped = rng.random(len(FLIP_AXES)) < FLIP_PROBABILITY if self.settings.flips else np.zeros(2, bool)
        # small values as NumPy arrays and numbers: they pass pickled, without a file descriptor each
        patch = {"origin": origin, "flipped": flipped, "case": index}
        if self.slots is not None and torch.utils.data.get_worker_info() is not None:
            patch["slot"] = self.slots.take()
            volumes = [v for v in self.cases.arrays(index) if v is not None]
            for volume, tensor in zip(volumes, self.slots.views(patch["slot"])):
                cut_patch(volume, origin, patch_size, flipped, tensor.numpy()[0])
        return patch

    def collate(self, patches: list[dict]) -> PatchBatch:
        """The queue's patches as a batch (in the main process)."""
        size = tuple(self.settings.patch_size)
        sources = [
            self.slots.views(p["slot"])
            if "slot" in p
            else [PatchCut(v, p["origin"], size, p["flipped"]) for v in self.cases.arrays(p["case"]) if v is not None]
            for p in patches
        ]
        return PatchBatch(
            images=[s[0] for s in sources],
            labels=[s[1] for s in sources] if self.cases.with_label else None,
            locations=np.stack([np.concatenate([p["origin"], p["origin"] + np.array(size)]) for p in patches]),
            flipped=np.stack([p["flipped"] for p in patches]),
            cases=[p["case"] for p in patches],
            slots=[p["slot"] for p in patches if "slot" in p],
        )


class EndlessVisits(torch.utils.data.Sampler):
    """Case visits without end: passes over the cases, each in a new random order, every visit
    with its own seed, all from one generator seeded once. The sequence is the same whatever the
    number of workers and however far they prefetch."""

    def __init__(self, num_cases: int, seed: int) -> None:
        self.num_cases, self.seed = num_cases, seed

    def __len__(self) -> int:
        return self.num_cases  # one pass, which the queue counts as its epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(self.num_cases, generator=generator).tolist()
            seeds = torch.randint(0, 2**62, (self.num_cases,), generator=generator).tolist()
            yield from zip(order, seeds)


class VisitPatches(tio.data.PatchSampler):
    """The queue's patch sampler: hands on, once each, the patches a worker cut for one visit."""

    def __call__(self, visit: list[dict], num_patches: int | None = None) -> Iterator[dict]:
        while visit:
            yield visit.pop(0)


class PatchQueue(tio.Queue):
    """TorchIO's queue, fed by one endless loader of case visits, so its workers live as long as
    the stream (a loader per pass would start them again every pass). It fills as TorchIO's does:
    until the list is full or every case of the current pass has been visited, then shuffles."""

    @property
    def iterations_per_epoch(self) -> int:
        return self.num_subjects * self.samples_per_volume

    def _fill(self) -> None:
        if self._num_sampled_subjects >= self.num_subjects:
            self._num_sampled_subjects = 0  # the endless loader has begun its next pass
        super()._fill()


PREFETCH_FACTOR = 2  # visits each worker works ahead (DataLoader's default)


def patch_stream(
    cases: CaseVolumes,
    sampler: UniformPatches,
    batch_size: int,
    settings: QueueSettings,
) -> Iterator[PatchBatch]:
    """An endless stream of :class:`PatchBatch` of ``batch_size`` patches (fewer at the end of a pass).

    Every random draw comes from torch's global generator in this (the main) process once the
    first batch is asked for (the engine's data stream, ``DataRandomness``): one seed for the case
    visits, the queue's shuffles, the loaders' seeds. The stream is the same for any number of workers.
    """
    sampler.prepare(cases)
    visits_seed = int(torch.empty((), dtype=torch.int64).random_())
    max_length = max(settings.queue_length, settings.samples_per_volume)
    slots = None
    if settings.num_workers:
        # enough that a worker never waits for a slot the main process can only free once it has
        # that worker's visit: the queue's list, a batch, and every visit in flight or prefetched
        in_flight = (PREFETCH_FACTOR + 1) * settings.num_workers + 1
        layout = [((1, *settings.patch_size), v.dtype) for v in cases.arrays(0) if v is not None]
        slots = PatchSlots(max_length + batch_size + in_flight * settings.samples_per_volume, layout)
    visits = CaseVisits(cases, sampler, settings, slots)
    queue = PatchQueue(
        visits,
        max_length=max_length,
        samples_per_volume=settings.samples_per_volume,
        sampler=VisitPatches(settings.patch_size),
        subject_sampler=EndlessVisits(len(cases), visits_seed),
        num_workers=settings.num_workers,
        shuffle_subjects=False,
        start_background=False,
    )
    loader = DataLoader(queue, batch_size=batch_size, num_workers=0, drop_last=False, collate_fn=visits.collate)
    while True:
        for batch in loader:
            yield batch
            if slots is not None:
                slots.release(batch.slots)
