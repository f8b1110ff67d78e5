#!/usr/bin/env bash
# The synthetic benchmark's core rows on a lent GPU machine (bench/gpu_benchmark.py): carry the
# wheels as bench/gpu.sh says (.whl), then device tool run with carry [".whl"], command
# "bash bench/gpu_benchmark.sh", timeout 600 s. Records: bench/results/gpu_benchmark.jsonl, and $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 bench/gpu_benchmark.py "$@"
