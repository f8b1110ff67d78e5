"""What STAC's shape transformation costs per patch (``dhc_stac``, issue 39), on this machine's CPU.

The transformation runs in NumPy/SciPy on the host, once per labelled patch every step (Euclidean
distance transforms of the small organs' mask, the flow, its Gaussian smoothing, two resamplings
and the distance target's transforms) and, from STAC's epoch 40, once per unlabelled patch (the
flow of the predicted distance, smoothing and resampling; the second forward and backward pass of
both networks on those patches is the GPU's and not counted here). Patches of the protocol's size
(64x128x128) are cut around the organs of synthetic AMOS-class phantoms (``micd.data.synthetic``)
on the protocol's 80x160x160 AMOS grid;
each path is timed on ``--patches`` of them, and STAC's own order (the whole labelled volume before
the crop) on the whole phantom, for comparison. One record per run is appended to
``bench/results/stac_cost.jsonl`` with the machine.

    python bench/stac_cost.py --patches 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import zoom

from micd.data.synthetic import generate_case
from micd.methods import Batch, build_method
from micd.methods.stac import shape_transform, signed_distance
from micd.provenance import machine_description

ROOT = Path(__file__).resolve().parents[1]

PATCH = (64, 128, 128)
GRID = (80, 160, 160)  # DHC's AMOS volumes, the whole labelled volume STAC transforms


def patch_around_organs(label: np.ndarray, rng: np.random.Generator) -> tuple[slice, ...]:
    """A protocol-sized window (or the whole axis, where the volume is smaller) at a random organ voxel."""
    foreground = np.argwhere(label > 0)
    centre = foreground[rng.integers(len(foreground))]
    return tuple(
        slice(max(0, min(c - p // 2, n - p)), max(0, min(c - p // 2, n - p)) + min(p, n))
        for c, p, n in zip(centre, PATCH, label.shape)
    )


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=4, help="patches timed per path")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stac_cost.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = round(os.getloadavg()[0], 2)  # other processes on the host slow the timings
    rng = np.random.default_rng(0)
    method = build_method("dhc_stac", {}, 16, n_filters=2)
    labelled_s, unlabelled_s, volume_s, shapes, volume_shapes = [], [], [], [], []
    for case in range(args.patches):
        image_volume, label_volume = generate_case(0, case)
        # (D, H, W) on the protocol's AMOS grid, intensities as DHC's loader gives them
        image, label = image_volume.data.T.astype(np.float32), label_volume.data.T
        factors = [g / n for g, n in zip(GRID, label.shape)]
        image, label = zoom(image, factors, order=1), zoom(label, factors, order=0).astype(np.int64)
        image = np.clip(image, -75, 275)
        image = (image - image.min()) / (image.max() - image.min())
        window = patch_around_organs(label, rng)
        batch = Batch(image=torch.from_numpy(image[window])[None, None], label=torch.from_numpy(label[window])[None])
        seconds, (_, moved_label, target, _) = timed(method.transform_labelled, batch)
        labelled_s.append(seconds)
        shapes.append(list(moved_label.shape[1:]))
        # the unlabelled path reads a predicted distance in [-1, 1]: here the patch's own target
        pseudo = torch.from_numpy(label[window])[None]
        seconds, _ = timed(method.transform_unlabelled, batch.image, target, pseudo)
        unlabelled_s.append(seconds)
        deformed = method.deformed.numpy()

        def whole_volume(image=image, label=label, deformed=deformed):
            return shape_transform(image, label, signed_distance(deformed[label]), -3, 1.0, -1.0)

        seconds, _ = timed(whole_volume)
        volume_s.append(seconds)
        volume_shapes.append(list(label.shape))
    record = {
        "benchmark": "stac_cost",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "patch_shapes": shapes,
        "labelled_patch_s": [round(s, 4) for s in labelled_s],
        "unlabelled_patch_s": [round(s, 4) for s in unlabelled_s],
        "labelled_patch_s_median": round(statistics.median(labelled_s), 4),
        "unlabelled_patch_s_median": round(statistics.median(unlabelled_s), 4),
        "whole_volume_shapes": volume_shapes,
        "whole_volume_s_median": round(statistics.median(volume_s), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
