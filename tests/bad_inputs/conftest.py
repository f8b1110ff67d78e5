"""Fixtures shared by the bad-input tests (tests/bad_inputs/): snapshots of a folder tree, to show that a stage
changed nothing outside its own output. The functions live in tree_snapshot.py, importable by name."""

from collections.abc import Callable
from pathlib import Path

import pytest
from tree_snapshot import Snapshot, snapshot_difference, tree_snapshot


@pytest.fixture
def snapshot() -> Callable[..., Snapshot]:
    """tree_snapshot, as a fixture: `before = snapshot(tmp_path, exclude=("out",))`."""
    return tree_snapshot


@pytest.fixture
def assert_unchanged() -> Callable[..., None]:
    """assert_unchanged(root, before, exclude=()): fails listing every path that differs from `before`."""

    def check(root: Path, before: Snapshot, exclude: tuple[str, ...] = ()) -> None:
        difference = snapshot_difference(before, tree_snapshot(root, exclude))
        assert not difference, "changed outside the stage's output:\n" + "\n".join(difference)

    return check
