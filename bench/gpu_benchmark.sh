#!/usr/bin/env bash
# The synthetic benchmark's core rows on a lent GPU machine (bench/gpu_benchmark.py): carry the
# wheels as bench/gpu.sh says (.whl), then device tool run with carry [".whl"], command
# "bash bench/gpu_benchmark.sh", timeout 600 s. Records: bench/results/gpu_benchmark.jsonl, and $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
# micd is not installed there: the checkout's src/ is its package (the bench scripts import it,
# never put it on the module path themselves), the carried wheels beside it
export PYTHONPATH="$PWD/src"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 bench/gpu_benchmark.py "$@"
