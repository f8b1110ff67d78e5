from pathlib import Path

import pytest
import yaml
from workflow_helpers import TINY_CONFIG, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny configuration run to the end on this machine, once per test session."""
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    snakemake(workdir, "--cores", "2")
    return workdir
