import shutil
from pathlib import Path

import pytest
import yaml
from workflow_helpers import TINY_CONFIG, snakemake

from micd.data.synthetic import generate_archive

# Fixtures that cost minutes: a test that uses one is in the slow tier whatever its own cost.
SLOW_FIXTURES = frozenset({"tiny_run"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier (`pytest -m "not slow"`) leaves out the workflow and SLURM tests and every
    test that needs the tiny workflow run; the whole suite runs them all."""
    for item in items:
        if item.get_closest_marker("workflow") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)
        elif SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny configuration run to the end on this machine, once per test session."""
    workdir = tmp_path_factory.mktemp("workflow")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic archive in AMOS's layout (two training cases, one validation case), once per module."""
    out = tmp_path_factory.mktemp("source") / "archive"
    generate_archive(out, 2, 1, seed=3, inplane=(40, 48), slices=(16, 20))
    return out


@pytest.fixture
def archive(source: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`source` that a test may damage."""
    return Path(shutil.copytree(source, tmp_path / "archive"))
