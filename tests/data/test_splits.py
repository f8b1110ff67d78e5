"""Tests of split generation and validation (micd.data.splits) and the case-list files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from http_server import serve

from micd.data.acquire import fetch_files
from micd.data.io import read_case_list, write_case_list
from micd.data.splits import (
    assemble_splits,
    labelled_name,
    make_splits,
    published_name,
    unlabelled_name,
    validate_splits,
    write_splits,
)
from micd.errors import DataError

TRAIN_IDS = [f"amos_{k:04d}" for k in range(1, 41)]
TEST_IDS = [f"amos_{k:04d}" for k in range(41, 49)]
RATIOS = [5, 10, 20]
KNOWN = set(TRAIN_IDS) | set(TEST_IDS)


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    write_splits(make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=0), tmp_path / "splits")
    return tmp_path / "splits"


def test_sizes_and_disjointness() -> None:
    splits = make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=0)
    assert len(splits["eval"]) == 4 and len(splits["train"]) == 36
    assert splits["test"] == TEST_IDS
    assert set(splits["train"]) | set(splits["eval"]) == set(TRAIN_IDS)
    assert not set(splits["train"]) & set(splits["eval"])
    for ratio, n_labelled in ((5, 2), (10, 4), (20, 7)):  # 1.8, 3.6, 7.2 of 36
        labelled, unlabelled = (
            splits[f"labelled_{ratio}p"],
            splits[f"unlabelled_{ratio}p"],
        )
        assert len(labelled) == n_labelled and len(unlabelled) == 36 - n_labelled
        assert set(labelled) | set(unlabelled) == set(splits["train"])
        assert not set(labelled) & set(unlabelled)
    assert all(ids == sorted(ids) for ids in splits.values())


def test_labelled_sets_are_nested() -> None:
    splits = make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=3)
    assert set(splits["labelled_5p"]) < set(splits["labelled_10p"]) < set(splits["labelled_20p"])


def test_at_least_one_eval_and_one_labelled_case() -> None:
    splits = make_splits(TRAIN_IDS[:5], [], [1], seed=0)
    assert len(splits["eval"]) == 1 and len(splits["labelled_1p"]) == 1


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    first = make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=1)
    assert make_splits(list(reversed(TRAIN_IDS)), TEST_IDS, RATIOS, seed=1) == first
    other = make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=2)
    assert other["eval"] != first["eval"] or other["labelled_10p"] != first["labelled_10p"]


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(DataError, match="amos_0041"):
        make_splits(TRAIN_IDS + ["amos_0041"], TEST_IDS, RATIOS, seed=0)
    with pytest.raises(DataError, match="amos_0001"):
        make_splits(TRAIN_IDS + ["amos_0001"], TEST_IDS, RATIOS, seed=0)
    with pytest.raises(ValueError, match="ratios"):
        make_splits(TRAIN_IDS, TEST_IDS, [0], seed=0)
    with pytest.raises(DataError, match="at least 2"):
        make_splits(TRAIN_IDS[:1], TEST_IDS, RATIOS, seed=0)


def test_written_splits_validate(split_dir: Path) -> None:
    assert sorted(p.name for p in split_dir.iterdir()) == sorted(
        ["train.txt", "eval.txt", "test.txt"] + [f"{k}_{r}p.txt" for r in RATIOS for k in ("labelled", "unlabelled")]
    )
    assert read_case_list(split_dir / "test.txt") == TEST_IDS
    validate_splits(split_dir, RATIOS, KNOWN)


def _edit(split_dir: Path, name: str, change) -> None:  # type: ignore[no-untyped-def]
    write_case_list(split_dir / name, change(read_case_list(split_dir / name)))


@pytest.mark.parametrize(
    ("id_from", "add_to", "remove_from", "expected"),
    [
        (
            "labelled_10p.txt",
            "unlabelled_10p.txt",
            None,
            "labelled_10p.txt and unlabelled_10p.txt overlap",
        ),
        (
            "eval.txt",
            "labelled_10p.txt",
            None,
            "labelled_10p.txt has ids not in train.txt",
        ),
        (
            "test.txt",
            "unlabelled_5p.txt",
            None,
            "unlabelled_5p.txt has ids in eval.txt or test.txt",
        ),
        ("test.txt", "eval.txt", None, "eval.txt and test.txt overlap"),
        (
            "unlabelled_20p.txt",
            None,
            "unlabelled_20p.txt",
            "labelled_20p.txt + unlabelled_20p.txt miss ids of train.txt",
        ),
        ("amos_9999", "train.txt", None, "train.txt has ids not in the data"),
        ("train.txt", "train.txt", None, "train.txt lists ids more than once"),
    ],
)
def test_validator_names_each_fault_and_its_ids(
    split_dir: Path,
    id_from: str,
    add_to: str | None,
    remove_from: str | None,
    expected: str,
) -> None:
    case_id = read_case_list(split_dir / id_from)[0] if id_from.endswith(".txt") else id_from
    if add_to:
        _edit(split_dir, add_to, lambda ids: ids + [case_id])
    if remove_from:
        _edit(split_dir, remove_from, lambda ids: [i for i in ids if i != case_id])
    with pytest.raises(DataError) as info:
        validate_splits(split_dir, RATIOS, KNOWN)
    assert expected in str(info.value) and case_id in str(info.value)


def test_validator_reports_missing_files(split_dir: Path) -> None:
    (split_dir / "labelled_5p.txt").unlink()
    with pytest.raises(DataError, match="labelled_5p.txt"):
        validate_splits(split_dir, RATIOS, KNOWN)


def test_case_list_round_trip(tmp_path: Path) -> None:
    write_case_list(tmp_path / "ids.txt", ["amos_0002", "amos_0001"])
    assert (tmp_path / "ids.txt").read_text() == "amos_0002\namos_0001\n"
    (tmp_path / "ids.txt").write_text("amos_0002\n\n  amos_0001  \n")
    assert read_case_list(tmp_path / "ids.txt") == ["amos_0002", "amos_0001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


# DHC's published split files, served from a real HTTP server on loopback and judged, not trusted.
PUBLISHED = Path(__file__).resolve().parents[1] / "fixtures" / "dhc_splits"
PUBLISHED_RATIOS = {"amos": [2, 5, 10, 20], "synapse": [10, 20, 40]}


def _fetch_published(family: str, ratios: list[int], out: Path) -> Path:
    names = ["train.txt", "eval.txt", "test.txt"]
    names += [published_name(n) for r in ratios for n in (labelled_name(r), unlabelled_name(r))]
    digests = {name: hashlib.sha256((PUBLISHED / family / name).read_bytes()).hexdigest() for name in names}
    with serve(PUBLISHED / family) as (url, _):
        fetch_files(url, digests, out)
    return out


def _all_ids(family: str) -> set[str]:
    return {i for name in ("train", "eval", "test") for i in read_case_list(PUBLISHED / family / f"{name}.txt")}


@pytest.mark.parametrize(
    ("family", "ratio", "verdict"),
    [
        ("amos", 2, None),
        ("amos", 5, None),
        ("amos", 10, None),
        ("amos", 20, "labelled_20p.txt has ids not in train.txt: ['amos_0066', 'amos_0349', 'amos_0381']"),
        ("synapse", 10, None),
        ("synapse", 20, None),
        ("synapse", 40, None),
    ],
)
def test_verdict_on_each_published_split(tmp_path: Path, family: str, ratio: int, verdict: str | None) -> None:
    published = _fetch_published(family, [ratio], tmp_path / "published")
    splits, origins = assemble_splits([], [], [ratio], 0, 0.1, 0.2, published)
    assert {row["origin"].split(",")[0] for row in origins} == {"published"}
    write_splits(splits, tmp_path / "splits")
    if verdict is None:
        validate_splits(tmp_path / "splits", [ratio], _all_ids(family))
    else:
        with pytest.raises(DataError) as info:
            validate_splits(tmp_path / "splits", [ratio], _all_ids(family))
        assert verdict in str(info.value)


def test_published_where_they_exist_generated_otherwise(tmp_path: Path) -> None:
    """Synapse: DHC's train/eval/test and 10 % files; 5 % drawn from DHC's train with the seed."""
    published = _fetch_published("synapse", [10], tmp_path / "published")
    splits, origins = assemble_splits([], [], [5, 10], 7, 0.1, 0.2, published)
    origin = {row["split"]: row["origin"] for row in origins}
    assert origin["labelled_5p"] == origin["unlabelled_5p"] == "generated, seed 7"
    assert origin["labelled_10p"].startswith("published, http://127.0.0.1:")
    assert origin["labelled_10p"].endswith(
        "/labeled_10p.txt (sha256 "
        + hashlib.sha256((PUBLISHED / "synapse" / "labeled_10p.txt").read_bytes()).hexdigest()
        + ")"
    )
    assert splits["labelled_10p"] == sorted(read_case_list(PUBLISHED / "synapse" / "labeled_10p.txt"))
    assert len(splits["labelled_5p"]) == 1 and set(splits["labelled_5p"]) <= set(splits["train"])
    write_splits(splits, tmp_path / "splits")
    validate_splits(tmp_path / "splits", [5, 10], _all_ids("synapse"))


def test_split_command_stops_on_a_bad_published_file_and_writes_nothing(tmp_path: Path) -> None:
    published = _fetch_published("amos", [20], tmp_path / "published")
    cases = tmp_path / "cases.csv"
    ids = sorted(_all_ids("amos"))
    cases.write_text("case_id,subset\n" + "".join(f"{i},train\n" for i in ids))
    result = subprocess.run(
        [sys.executable, "-m", "micd.cli", "split", "--cases", str(cases), "--out", str(tmp_path / "splits"),
         "--ratios", "20", "--seed", "0", "--eval-fraction", "0.1", "--published", str(published)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "labelled_20p.txt has ids not in train.txt: ['amos_0066', 'amos_0349', 'amos_0381']" in result.stderr
    assert "labelled_20p.txt: published, " in result.stderr and "labeled_20p.txt (sha256" in result.stderr
    assert f"the split lists for {tmp_path / 'splits'} is inconsistent" in result.stderr  # no temporary folder
    assert "/tmp/tmp" not in result.stderr
    assert not (tmp_path / "splits").exists()


@pytest.mark.parametrize("removed", ["test.txt", "unlabeled_10p.txt"])
def test_a_published_folder_missing_part_of_a_group_is_an_error_naming_it(tmp_path: Path, removed: str) -> None:
    published = _fetch_published("synapse", [10], tmp_path / "published")
    (published / removed).unlink()
    with pytest.raises(DataError, match=rf"has .* but not \['{removed}'\]: publish the whole group"):
        assemble_splits([], [], [5, 10], 7, 0.1, 0.2, published)


def test_without_published_files_the_lists_are_make_splits_own() -> None:
    splits, origins = assemble_splits(TRAIN_IDS, TEST_IDS, RATIOS, 3, 0.1, 0.2)
    assert splits == make_splits(TRAIN_IDS, TEST_IDS, RATIOS, seed=3)
    assert {row["origin"] for row in origins} == {"generated, seed 3"}


def test_a_data_set_without_test_cases_gets_a_seeded_test_split() -> None:
    splits = make_splits(TRAIN_IDS, [], [10], seed=0, test_fraction=0.2)
    assert len(splits["test"]) == 8 and len(splits["eval"]) == 3
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["eval"]))
