"""GPU check of micd's sliding-window inference at the protocol's sizes (run on a lent GPU machine).

Width-32 MICD (random weights) on an 80x160x160 volume with 64x128x128 windows and stride
16/32/32: seconds per volume at batch 1 and 4 for each blending mode, whether batching changes
the result, peak GPU memory, odd volume shapes, and predict_cases on CUDA writing both grids.
On the GPU machine, from the repository root, with the package and the wheels that bench/gpu.sh
installs on the module path (``PYTHONPATH=src:/tmp/site python3 bench/gpu_inference_check.py``);
writes $OUT/gpu_check.json. Results: bench/results/gpu_inference_check.jsonl.
"""

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from in_process import synthetic_set

from micd.data.io import load_nifti
from micd.data.preprocess import read_cases
from micd.inference.infer import InferenceSettings, original_prediction_path, predict_cases, prediction_path
from micd.inference.sliding_window import BLENDING_MODES, sliding_window_probabilities
from micd.methods import build_method
from micd.provenance import machine_description

out = Path(os.environ.get("OUT", "/tmp"))
dev = torch.device("cuda")
stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
report = {"benchmark": "gpu_inference_check", "date": stamp, "machine": machine_description(dev)}
PATCH, STRIDE = (64, 128, 128), (16, 32, 32)
torch.manual_seed(0)
model = build_method("micd", {}, 16, n_filters=32, dropout=0.5).to(dev).eval()
volume = torch.rand((80, 160, 160))


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return r, time.perf_counter() - t


sliding_window_probabilities(model.predict, volume, PATCH, STRIDE, 4, "average", dev)  # warm-up
for mode in BLENDING_MODES:
    torch.cuda.reset_peak_memory_stats()
    one, t1 = timed(lambda: sliding_window_probabilities(model.predict, volume, PATCH, STRIDE, 1, mode, dev))
    four, t4 = timed(lambda: sliding_window_probabilities(model.predict, volume, PATCH, STRIDE, 4, mode, dev))
    report[mode] = {
        "seconds_batch1": round(t1, 3),
        "seconds_batch4": round(t4, 3),
        "max_abs_diff_batch1_vs_4": float((one - four).abs().max()),
        "label_agreement": float((one.argmax(0) == four.argmax(0)).float().mean()),
        "sum_to_one_max_err": float((four.sum(0) - 1).abs().max()),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
for shape in ((50, 100, 100), (90, 170, 150)):
    p = sliding_window_probabilities(model.predict, torch.rand(shape), PATCH, STRIDE, 4, "average", dev)
    report[f"shape_{'x'.join(map(str, shape))}"] = [list(p.shape), float((p.sum(0) - 1).abs().max())]

root = Path(tempfile.mkdtemp())
data = synthetic_set(root, 2, 2, seed=1, grid=(80, 160, 160), inplane=(96, 112), slices=(40, 48))
torch.save(
    {
        "method_state": model.state_dict(),
        "method_settings": {},
        "train_settings": {"n_filters": 32, "dropout": 0.5, "patch_size": list(PATCH), "window_stride": list(STRIDE)},
        "num_classes": 16,
        "provenance": {"method": "micd"},
    },
    root / "model.pt",
)
ids = data.test
_, t = timed(
    lambda: predict_cases(root / "model.pt", data.preprocessed, ids, root / "pred", InferenceSettings(4), "cuda")
)
report["predict_cases_cuda"] = {
    "cases": len(ids),
    "seconds": round(t, 2),
    "grid_shape": list(load_nifti(prediction_path(root / "pred", ids[0])).data.shape),
    "original_shape": list(load_nifti(original_prediction_path(root / "pred", ids[0])).data.shape),
    "source_shape": read_cases(data.preprocessed)[ids[0]]["source_shape"],
}
print(json.dumps(report, indent=1))
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
sys.exit(0)
