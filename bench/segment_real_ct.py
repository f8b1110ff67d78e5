"""``micd segment`` on the real abdominal CT of ``shared/reference/real_ct`` with a trained run, scored
against the CT's TotalSegmentator labels; and the figure of those labels for ``docs/figures/``.

    .venv/bin/python bench/segment_real_ct.py --model RUN/model.pt
    .venv/bin/python bench/segment_real_ct.py --reference-figure docs/figures/real_ct_totalsegmentator.png

The first runs ``micd segment`` as a user would (one process, wall time and peak memory of its
process tree), then appends a record to ``results/segment_real_ct.jsonl``: the machine, the
run, Dice per organ and volumes (mL) against the TotalSegmentator labels mapped to AMOS's
classes. It copies the volume table to ``results/segment_real_ct_volumes.csv`` and draws the CT,
those labels and the prediction to ``results/segment_real_ct_prediction.png``. TotalSegmentator's
labels are themselves predictions (not a radiologist's), so the Dice says how near the run comes
to that model, not to the truth.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from default_run import tree_rss_bytes

from micd.atomic import atomic_write
from micd.data.classes import AMOS_CLASSES
from micd.data.convert import to_canonical
from micd.data.io import Volume, file_digest, load_nifti
from micd.data.preprocess import window_normalise
from micd.data.totalsegmentator import REAL_CT_SOURCE, real_ct_dir, to_amos
from micd.evaluation.measures import dice_percent
from micd.model_file import read_model
from micd.provenance import code_version, machine_description, provenance
from micd.report.figures import plot_label_maps
from micd.report.sidecar import sidecar_path

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = real_ct_dir(ROOT.parent / "shared" / "reference" / "real_ct")  # shared/ beside the clone
RESULTS = ROOT / "bench" / "results"
DISPLAY_WINDOW = (-75.0, 275.0)  # HU: the workflow's preprocessing window, the one a model sees
REFERENCE_NAME = "TotalSegmentator labels"
CAPTION = (
    "Labels predicted by TotalSegmentator (not drawn by a radiologist), mapped to AMOS's classes. "
    "CT (3 mm, 30 slices) and labels from github.com/wasserth/TotalSegmentator (commit 0e65a44, "
    "tests/reference_files), Apache License 2.0."
)


def canonical_dhw(volume) -> np.ndarray:
    """A volume's array in RAS (D, H, W) order, as the figures draw it."""
    return to_canonical(volume).data.transpose(2, 1, 0)


def reference_labels() -> tuple[np.ndarray, Volume]:
    labels = load_nifti(REAL_CT / "totalsegmentator_labels.nii.gz")
    return to_amos(labels.data), labels


def windowed_ct() -> np.ndarray:
    return window_normalise(canonical_dhw(load_nifti(REAL_CT / "ct.nii.gz")), DISPLAY_WINDOW)


def draw_reference(out_png: Path) -> None:
    """The CT with its TotalSegmentator labels, and the figure's provenance sidecar."""
    amos, labels = reference_labels()
    amos_dhw = canonical_dhw(Volume(amos, labels.affine))
    slices = plot_label_maps(
        windowed_ct(),
        {REFERENCE_NAME: amos_dhw},
        AMOS_CLASSES,
        out_png,
        "A real abdominal CT and its TotalSegmentator labels",
        image_name="CT",
        caption=CAPTION,
    )
    record = provenance(
        {
            "output": out_png.name,
            "source": REAL_CT_SOURCE,
            "licence": "Apache License 2.0 (shared/reference/real_ct/LICENSE-TotalSegmentator)",
            "files": {name: file_digest(REAL_CT / name) for name in ("ct.nii.gz", "totalsegmentator_labels.nii.gz")},
            "display_window_hu": list(DISPLAY_WINDOW),
            "axial_slices": slices,
            "script": "bench/segment_real_ct.py --reference-figure",
        }
    )
    atomic_write(sidecar_path(out_png), json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{out_png}: slices {slices}")


def run_segment(model: Path, out_dir: Path) -> tuple[float, int]:
    """``micd segment`` on the real CT: wall seconds and peak resident bytes of its processes."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    command = ["micd", "segment", str(REAL_CT / "ct.nii.gz"), "--model", str(model), "--out", str(out_dir)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"micd segment failed:\n{process.stderr.read()[-3000:]}")
    return wall, peak


def score(prediction: np.ndarray, reference: np.ndarray, voxel_ml: float) -> list[dict]:
    """Dice (%) and volumes of each AMOS organ in the reference or the prediction."""
    rows = []
    for organ in AMOS_CLASSES[1:]:
        truth, predicted = reference == organ.label, prediction == organ.label
        if not truth.any() and not predicted.any():
            continue
        rows.append(
            {
                "organ": organ.name,
                "reference_ml": round(float(truth.sum()) * voxel_ml, 1),
                "predicted_ml": round(float(predicted.sum()) * voxel_ml, 1),
                "dice": round(dice_percent(predicted, truth), 1) if truth.any() else None,
            }
        )
    return rows


def benchmark(model: Path, note: str) -> None:
    saved = read_model(model)  # weights only: the file runs no code
    reference, labels = reference_labels()
    with tempfile.TemporaryDirectory(prefix="micd-segment-") as tmp:
        out_dir = Path(tmp) / "segmented"
        load_at_start = os.getloadavg()[0]
        wall, peak = run_segment(model, out_dir)
        prediction = load_nifti(out_dir / "ct.nii.gz")
        shutil.copyfile(out_dir / "volumes.csv", RESULTS / "segment_real_ct_volumes.csv")
        with open(out_dir / "volumes.csv", newline="") as f:
            found = [row["organ"] for row in csv.DictReader(f) if int(row["voxels"]) > 0]
    voxel_ml = abs(float(np.linalg.det(labels.affine[:3, :3]))) / 1000
    organs = score(prediction.data, reference, voxel_ml)
    run = saved["provenance"]
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": code_version(),
        "machine": machine_description(threads=1),  # micd segment's default, as the command runs it
        "load_average_at_start": round(load_at_start, 2),
        "command": "micd segment ct.nii.gz --model model.pt --out DIR (one thread, CPU)",
        "wall_s": round(wall, 2),
        "peak_rss_gib": round(peak / 2**30, 2),
        "model": {
            "path": str(model),
            "sha256": file_digest(model),
            "run": {key: run.get(key) for key in ("dataset", "ratio", "variant", "seed", "code_version", "created")},
            "best_epoch": saved["best_epoch"],
            "best_eval_dice": round(saved["best_eval_dice"], 2),
            "preprocessing": saved["preprocessing"],
        },
        "scan": {"file": "shared/reference/real_ct/ct.nii.gz", "sha256": file_digest(REAL_CT / "ct.nii.gz")},
        "organs_found": found,
        "mean_dice_of_reference_organs": round(float(np.mean([o["dice"] for o in organs if o["dice"] is not None])), 1),
        "organs": organs,
        "note": note,
    }
    with open(RESULTS / "segment_real_ct.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    plot_label_maps(
        windowed_ct(),
        {REFERENCE_NAME: canonical_dhw(Volume(reference, labels.affine)), "micd segment": canonical_dhw(prediction)},
        AMOS_CLASSES,
        RESULTS / "segment_real_ct_prediction.png",
        f"The real CT segmented by {run.get('variant')} at {run.get('ratio')} % ({run.get('dataset')}, seed {run.get('seed')})",
        image_name="CT",
        caption=CAPTION,
    )
    print(json.dumps(record, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a run's model.pt to segment the real CT with")
    parser.add_argument("--note", default="", help="text for the record, e.g. how the model was trained")
    parser.add_argument("--reference-figure", type=Path, help="draw the CT with its reference labels to this PNG")
    args = parser.parse_args()
    if not (REAL_CT / "ct.nii.gz").is_file():
        sys.exit(f"the real CT is not at {REAL_CT}")
    if args.reference_figure:
        draw_reference(args.reference_figure)
    if args.model:
        benchmark(args.model, args.note)
    if not (args.model or args.reference_figure):
        parser.error("give --model, --reference-figure or both")


if __name__ == "__main__":
    main()
