"""bench/ as a toolbox: its scripts import the installed package and never put src/ on the module
path; they describe the machine they ran on one way (micd.provenance.machine_description); the
in-process pipeline (bench/in_process.py) takes its case ids from the data; and the GPU check
imports nothing the GPU machine lacks beyond the wheels it carries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from in_process import case_subsets, synthetic_set

from micd.provenance import compute_environment, machine_description

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def test_no_bench_script_changes_the_module_path():
    """gpu.sh sets PYTHONPATH where micd is not installed; a script itself never does."""
    scripts = sorted(BENCH.rglob("*.py"))
    assert {"in_process.py", "gpu_check.py", "join_tables.py"} <= {p.name for p in scripts}
    offenders = [str(p.relative_to(ROOT)) for p in scripts if re.search(r"sys\.path\b|site\.addsitedir", p.read_text())]
    assert offenders == []
    assert 'export PYTHONPATH="$PWD/src"' in (BENCH / "gpu.sh").read_text()
    assert 'export PYTHONPATH="$PWD/src"' in (BENCH / "gpu_benchmark.sh").read_text()


def test_the_machine_is_the_compute_environment_and_the_host():
    machine = machine_description("cpu", threads=1)
    environment = compute_environment(torch.device("cpu"))
    assert {k: v for k, v in machine.items() if k in environment} == environment | {"threads": 1}
    assert {"host", "cores", "memory_gib", "cpu_bf16", "python", "torch", "packages"} <= set(machine)
    assert "gpu" not in machine  # a CPU's record: micd.training.memory reads "gpu" as measured on one
    assert json.loads(json.dumps(machine)) == machine


def test_the_in_process_pipeline_takes_its_case_ids_from_the_data(tmp_path):
    data = synthetic_set(tmp_path, 3, 2, seed=0, grid=(16, 32, 32), inplane=(40, 48), slices=(16, 20))
    assert (data.train, data.test) == case_subsets(data.preprocessed)
    assert len(data.train) == 3 and len(data.test) == 2 and not set(data.train) & set(data.test)
    assert len(data.classes) == 16
    assert not re.search(r"amos_\{", (BENCH / "in_process.py").read_text())
    for script in ("gpu_check.py", "gpu_benchmark.py", "gpu_inference_check.py"):
        assert "amos_" not in (BENCH / script).read_text(), script


@pytest.mark.slow
def test_the_gpu_scripts_import_nothing_the_gpu_machine_lacks():
    """The lent GPU machine has PyTorch and the carried wheels (torchio, nibabel, SimpleITK), no
    Snakemake and no Matplotlib."""
    check = (
        "import sys; sys.argv = ['x']; import gpu_check, gpu_benchmark; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'snakemake', 'matplotlib', 'jsonschema'}))"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
