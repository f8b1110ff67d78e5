#!/usr/bin/env bash
# The prepared GPU check: the step benchmark at the protocol's size, fp32 and mixed precision,
# for the supervised and the MICD step, with data loader workers, on a lent GPU machine.
#
# That machine has its own PyTorch but no torchio, nibabel or SimpleITK: carry them as wheels.
# Here, once, from the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl torchio==1.2.1 nibabel==5.4.2 simpleitk==2.5.7 deprecated==1.3.1
# Then run this script there (device tool: carry [".whl"], command "bash bench/gpu.sh").
# Results are appended to bench/results/step_benchmark.jsonl and copied to $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/step_benchmark.py --sizes protocol cpu --precisions fp32 amp --workers 4 \
    --iterations 20 --warmup 5 --samples-per-volume 4 --queue-length 32
if [ -n "${OUT:-}" ]; then cp bench/results/step_benchmark.jsonl "$OUT/"; fi
