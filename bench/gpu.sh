#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): the tiny workflow end to end on CUDA for every
# registered method; the peak GPU memory (torch.cuda.max_memory_allocated) of one training step
# of every method at the protocol's size in fp32 and fp16, the steps bench/memory_benchmark.py
# estimates on the CPU (about a minute); then every method's step timed at the protocol's size
# in fp32 and fp16 mixed precision (MICD also without channels-last and compiled). About 6
# minutes on an H100 or H200; give the device tool's run a timeout of 540 s, which leaves time
# for a second try (or `--skip steps` for the memory alone).
#
# That machine has its own PyTorch but no torchio, nibabel, SimpleITK or snakemake: carry the
# missing wheels. Here, once, from the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl torchio==1.2.1 nibabel==5.4.2 simpleitk==2.5.7 deprecated==1.3.1
# Then: device tool run, carry [".whl"], command "bash bench/gpu.sh". Records are appended to
# bench/results/gpu_check.jsonl there and copied to $OUT; copy that file back into bench/results/.
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/gpu_check.py --size protocol --workers 4 --iterations 8 --warmup 3 --compile "$@"
