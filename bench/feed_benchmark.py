"""Patches per second of the training feed beside DHC's loader recipe, and the patches per second
each method's training step consumes on a GPU.

Feeds, at the protocol's grid (80x160x160 cases, float32 image and uint8 label, written to a
temporary folder, so in the page cache) and patch (64x128x128), batch 2, each delivering stacked
(2, 1, 64, 128, 128) image and label batches in the main process:

* ``dhc_recipe``: DHC's loader as its training scripts build it, written out here: a
  ``torch.utils.data.DataLoader`` over a dataset whose item is ``np.load`` of the case's image and
  label, a random crop (origin in ``[0, n - p)``), then ``RandomFlip_LR`` and ``RandomFlip_UD`` on
  the crop (each a copy when it fires), collated into batches in its workers. The case files are
  DHC's: ``preprocess_amos.py`` (lines 45-58) resizes the label as a FloatTensor and saves it so,
  a float32 label of 8.2 MB beside the image (ours is uint8, 2 MB). It leaves out the
  clip and min-max rescaling of the whole volume that DHC's ``Synapse_AMOS.__getitem__`` also
  does per patch (our preprocessing does that once), so DHC's own loader is slower still.
* ``dhc_loader``: the same and DHC's ``ToTensor`` last, as ``make_loader`` in its ``train_*.py``
  composes them: the label crop becomes int64 in the worker (our engine sends the label's uint8
  bytes to the device and widens them there).
* ``uniform``: ``micd.data.loaders.patch_stream`` with uniform patches (every row but CLD's
  weighted sampling and ``train.class_balanced``), then ``stack_patches`` as the engine batches.
* ``class_weighted``: the same with patch centres weighted equally over 16 classes
  (``train.class_balanced``), the labels holding a box of every class.

Each feed runs with 0, 1 and 2 worker processes, in interleaved rounds (every feed and worker
count once per round), for ``--seconds`` after a warm-up. Recorded per feed and worker count:
patches/s (wall) and the main process's own CPU time per patch (``time.process_time``: its
threads, not its workers). With 0 workers one process does everything: patches/s per core.
The main process uses one torch thread.

FLOPs: one training step of every method (config/paper.yaml's AMOS settings and batches: VNet
width 32, 16 classes) counted by ``torch.utils.flop_counter.FlopCounterMode`` through
``Trainer.step`` at a 16x32x32 patch and scaled by the voxel count to 64x128x128 (every VNet
feature map is the patch divided by a power of two). From them, the patches/s a step consumes at
40 % of an H100's and an A100's dense 16-bit peak (989 and 312 TFLOPS).

    python bench/feed_benchmark.py                  # appends to bench/results/feed_benchmark.jsonl
    python bench/feed_benchmark.py --table          # the README's "Can 8 cores feed it" table
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from in_process import random_cases
from memory_benchmark import protocol_batches
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from micd.data.loaders import CaseVolumes, QueueSettings, labelled_sampler, patch_stream, stack_patches
from micd.methods import METHODS
from micd.provenance import machine_description
from micd.settings import TrainSettings
from micd.training.loop import TrainData, Trainer
from micd.training.runs import layered_config, resolve_run

ROOT = Path(__file__).resolve().parents[1]
GRID = (80, 160, 160)
PATCH = (64, 128, 128)
BATCH = 2
NUM_CLASSES = 16
FEEDS = ("dhc_recipe", "dhc_loader", "uniform", "class_weighted")
DHC_FEEDS = ("dhc_recipe", "dhc_loader")
PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0}  # dense 16-bit tensor-core peaks
UTILISATION = 0.4
FLOP_PATCH = (16, 32, 32)
AMOS_UNLABELLED = 206  # DHC's unlabeled_5p.txt
RESULTS = ROOT / "bench" / "results" / "feed_benchmark.jsonl"


def write_protocol_cases(root: Path, n: int) -> list[str]:
    """``n`` cases on the protocol's grid, each label holding a box of every class; the labels
    also as DHC saves them (float32, ``dhc_labels/``)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "dhc_labels").mkdir()
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        label = np.zeros(GRID, np.uint8)
        for c in range(1, NUM_CLASSES):
            corner = [rng.integers(0, g - 12) for g in GRID]
            label[tuple(slice(o, o + 12) for o in corner)] = c
        case_id = f"case_{i:03d}"
        np.save(root / "images" / f"{case_id}.npy", rng.random(GRID, dtype=np.float32))
        np.save(root / "labels" / f"{case_id}.npy", label)
        np.save(root / "dhc_labels" / f"{case_id}.npy", label.astype(np.float32))
        ids.append(case_id)
    return ids


class DHCRecipe(Dataset):
    """DHC's training item, written out: load the whole case, crop, flip the crop (see the module docstring)."""

    def __init__(self, root: Path, ids: list[str], repeat: int, to_tensor: bool) -> None:
        self.paths = [(root / "images" / f"{c}.npy", root / "dhc_labels" / f"{c}.npy") for c in ids]
        self.repeat, self.to_tensor = repeat, to_tensor

    def __len__(self) -> int:
        return self.repeat

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        image_path, label_path = self.paths[index % len(self.paths)]
        image, label = np.load(image_path), np.load(label_path)
        origin = [np.random.randint(0, n - p) for n, p in zip(image.shape, PATCH)]
        crop = tuple(slice(o, o + p) for o, p in zip(origin, PATCH))
        image, label = image[crop], label[crop]
        for axis in (1, 2):  # RandomFlip_LR, then RandomFlip_UD: each draws its own numbers
            if np.random.uniform(0, 1, 2)[axis - 1] <= 0.5:
                image, label = np.flip(image, axis).copy(), np.flip(label, axis).copy()
        if self.to_tensor:  # DHC's ToTensor: the image as float, the label as int64
            return {"image": torch.from_numpy(image[None]).float(), "label": torch.from_numpy(label[None]).long()}
        return {"image": image[None], "label": label[None]}


def dhc_batches(root: Path, ids: list[str], workers: int, to_tensor: bool):
    dataset = DHCRecipe(root, ids, repeat=100_000, to_tensor=to_tensor)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for batch in loader:
        yield batch["image"], batch["label"]


def feed_batches(root: Path, ids: list[str], workers: int, class_weighted: bool):
    cases = CaseVolumes(root, ids)
    weights = {c: 1.0 for c in range(NUM_CLASSES)} if class_weighted else None
    stream = patch_stream(cases, labelled_sampler(PATCH, weights), BATCH, QueueSettings(PATCH, 1, 16, workers))
    for batch in stream:
        yield stack_patches(batch.images), stack_patches(batch.labels)  # the engine's one copy per patch


def measure_feed(feed: str, root: Path, ids: list[str], workers: int, seconds: float, warmup: int) -> dict:
    torch.manual_seed(0)
    np.random.seed(0)
    batches = (
        dhc_batches(root, ids, workers, feed == "dhc_loader")
        if feed in DHC_FEEDS
        else feed_batches(root, ids, workers, feed == "class_weighted")
    )
    for _ in range(warmup):
        next(batches)
    patches, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        image, label = next(batches)
        assert image.shape == (BATCH, 1, *PATCH) and label.shape == (BATCH, 1, *PATCH)
        patches += len(image)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    del batches  # ends the workers
    return {"patches": patches, "patches_per_s": patches / wall, "main_ms_per_patch": 1000 * cpu / patches}


def step_flops(scratch: Path) -> dict[str, dict]:
    """TFLOP of one training step of every method at the protocol's size, from a FLOP_PATCH step."""
    data_dir = scratch / "flop_cases"
    ids = random_cases(data_dir, FLOP_PATCH, n=8)  # a pass of the labelled queue fills the fully row's batch of 4
    data = TrainData(data_dir, labelled=ids[:4], unlabelled=ids[4:], eval=[], num_classes=NUM_CLASSES)
    paper = layered_config([ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml"])
    batches = protocol_batches()
    scale = np.prod(PATCH) / np.prod(FLOP_PATCH)
    flops = {}
    for name in METHODS:
        run = resolve_run(paper, "amos", name)
        defaults = TrainSettings()
        batch = {"batch_labelled": defaults.batch_labelled, "batch_unlabelled": defaults.batch_unlabelled}
        batch |= batches[name]
        method_settings = dict(run.method_settings)
        if "mask_block" in method_settings:  # MICD's mask blocks tile the patch: keep their count
            method_settings["mask_block"] = max(1, method_settings["mask_block"] * FLOP_PATCH[0] // PATCH[0])
        settings = TrainSettings(
            max_epochs=10, iterations_per_epoch=10, n_filters=32, patch_size=list(FLOP_PATCH), amp="off",
            queue_length=4, **batch,
        )  # fmt: skip
        trainer = Trainer(run.method, method_settings, settings, data, scratch / f"flops-{name}", seed=0)
        # AMOS 5 %'s unlabelled cases: Adsh sizes its score bank by them
        trainer.method.initialise(torch.ones(NUM_CLASSES, dtype=torch.float64), AMOS_UNLABELLED)
        trainer.method.train()
        with FlopCounterMode(display=False) as counter:
            row = trainer.step(trainer.streams(), settings.lr)
        assert "skipped" not in row, f"{name}: the counted step was skipped ({row['skipped']})"
        patches = batch["batch_labelled"] + (batch["batch_unlabelled"] if trainer.method.uses_unlabelled else 0)
        tflop = float(counter.get_total_flops() * scale / 1e12)
        flops[name] = {"tflop_per_step": round(tflop, 2), "patches_per_step": patches}
        for gpu, peak in PEAK_TFLOPS.items():
            step_s = tflop / (UTILISATION * peak)
            flops[name][f"patches_per_s_needed_{gpu}"] = round(patches / step_s, 1)
        print(name, flops[name], flush=True)
    return flops


def summarise(rounds: list[dict]) -> dict:
    summary = {}
    for feed in FEEDS:
        for workers in (0, 1, 2):
            runs = [r[feed][workers] for r in rounds]
            summary.setdefault(feed, {})[str(workers)] = {
                "patches_per_s": round(statistics.median(r["patches_per_s"] for r in runs), 1),
                "main_ms_per_patch": round(statistics.median(r["main_ms_per_patch"] for r in runs), 2),
                "per_round_patches_per_s": [round(r["patches_per_s"], 1) for r in runs],
            }
    per_core = {feed: summary[feed]["0"]["patches_per_s"] for feed in FEEDS}
    for dhc in DHC_FEEDS:
        summary[f"per_core_ratio_to_{dhc}"] = {
            feed: round(per_core[feed] / per_core[dhc], 2) for feed in ("uniform", "class_weighted")
        }
        # the ratio within each round (the feeds of one round ran within seconds of each other)
        summary[f"per_core_ratio_to_{dhc}_per_round"] = {
            feed: [round(r[feed][0]["patches_per_s"] / r[dhc][0]["patches_per_s"], 2) for r in rounds]
            for feed in ("uniform", "class_weighted")
        }
        # per CPU second of the one process that does everything: less sensitive to the machine's load
        summary[f"per_cpu_second_ratio_to_{dhc}"] = {
            feed: round(summary[dhc]["0"]["main_ms_per_patch"] / summary[feed]["0"]["main_ms_per_patch"], 2)
            for feed in ("uniform", "class_weighted")
        }
    return summary


def delivered(per_core: float, main_ms: float, cores: int) -> float:
    """Patches/s ``cores`` worker processes deliver, extrapolated linearly from one core's rate
    (one process doing everything: conservative) and capped by the main process's own cost."""
    return min(cores * per_core, 1000 / main_ms)


def feed_capacity(record: dict, cores: int) -> float:
    """Patches/s ``cores`` worker processes deliver by one record, the lower of the two samplers:
    one core's rate (0 workers) times ``cores``, capped by the main process's own cost (the
    highest measured with 1 or 2 workers)."""
    feeds = record["feeds"]
    main_ms = max(feeds[f][str(w)]["main_ms_per_patch"] for f in ("uniform", "class_weighted") for w in (1, 2))
    return min(delivered(feeds[f]["0"]["patches_per_s"], main_ms, cores) for f in ("uniform", "class_weighted"))


def table(record: dict) -> str:
    """The README's "Can 8 cores feed it" table from one record."""
    three, seven = feed_capacity(record, 3), feed_capacity(record, 7)
    rows = [
        "| method | patches per step | TFLOP per step | patches/s needed at 40 % of an H100 | of an A100 "
        f"| 3 cores ({three:.0f}/s) keep the H100 fed | 7 cores ({seven:.0f}/s) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, f in record["flops"].items():
        need = f["patches_per_s_needed_H100"]
        rows.append(
            f"| `{name}` | {f['patches_per_step']} | {f['tflop_per_step']:.1f} | {need:.0f} "
            f"| {f['patches_per_s_needed_A100']:.0f} | {'yes' if three >= need else 'no'} "
            f"| {'yes' if seven >= need else 'no'} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per feed, worker count and round")
    p.add_argument("--warmup", type=int, default=10, help="batches before timing")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--table", action="store_true", help="print the README's table from the last record")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text().splitlines()[-1])))
        return
    torch.set_num_threads(1)
    record = {
        "benchmark": "feed",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description("cpu"),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "grid": list(GRID),
        "patch": list(PATCH),
        "batch": BATCH,
        "cases": args.cases,
        "seconds_per_measurement": args.seconds,
        "dhc_case_files": "float32 image and float32 label, as DHC's preprocess_amos.py saves them",
        "our_case_files": "float32 image and uint8 label, as micd preprocess saves them",
    }
    with tempfile.TemporaryDirectory(prefix="micd-feed-") as tmp:
        root = Path(tmp) / "cases"
        ids = write_protocol_cases(root, args.cases)
        rounds = []
        for round_index in range(args.rounds):
            results: dict = {feed: {} for feed in FEEDS}
            for workers in (0, 1, 2):
                for feed in FEEDS:
                    results[feed][workers] = measure_feed(feed, root, ids, workers, args.seconds, args.warmup)
                    print(
                        round_index,
                        workers,
                        feed,
                        {k: round(v, 2) for k, v in results[feed][workers].items()},
                        flush=True,
                    )
            rounds.append(results)
        record["feeds"] = summarise(rounds)
        record["load_average_after_feeds"] = [round(x, 2) for x in os.getloadavg()]
        record["flops"] = step_flops(Path(tmp))
    record["flop_count"] = (
        f"torch.utils.flop_counter through Trainer.step at {'x'.join(map(str, FLOP_PATCH))}, fp32, scaled by voxel count"
    )
    record["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(record["feeds"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(table(record))


if __name__ == "__main__":
    main()
