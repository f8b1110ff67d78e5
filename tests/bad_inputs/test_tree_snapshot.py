"""The snapshot helper itself: it must see every kind of change, or the bad-input tests prove nothing."""

from tree_snapshot import snapshot_difference, tree_snapshot


def test_snapshot_sees_added_removed_changed_and_ignores_excluded(tmp_path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "a.txt").write_text("a")
    (tmp_path / "gone.txt").write_text("g")
    (tmp_path / "out").mkdir()
    before = tree_snapshot(tmp_path, exclude=("out",))
    (tmp_path / "kept" / "a.txt").write_text("A")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "new").mkdir()
    (tmp_path / "out" / "written.txt").write_text("stage output")
    difference = snapshot_difference(before, tree_snapshot(tmp_path, exclude=("out",)))
    assert difference == ["removed gone.txt", "added new", "changed kept/a.txt"]
