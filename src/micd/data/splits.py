"""Seeded generation and validation of the case splits.

Split names: ``train``, ``eval``, ``test``, and per labelled ratio ``r`` (percent of ``train``)
``labelled_{r}p`` and ``unlabelled_{r}p``. On disk each split is ``{name}.txt``, one id per line.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from micd.data.io import read_case_list, write_case_list, write_csv
from micd.errors import DataError, SettingsError


def labelled_name(ratio: int) -> str:
    return f"labelled_{ratio}p"


def unlabelled_name(ratio: int) -> str:
    return f"unlabelled_{ratio}p"


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); counts should not depend on parity.
    return math.floor(x + 0.5)


def make_splits(
    train_ids: list[str],
    test_ids: list[str],
    ratios: list[int],
    seed: int,
    eval_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> dict[str, list[str]]:
    """Draw ``eval``/``train`` from the archive's training cases and nested labelled subsets of ``train``.

    ``eval`` has round(eval_fraction * n) cases (at least 1); ``test`` is ``test_ids`` (the
    validation-archive cases), or, when there are none (Synapse), round(test_fraction * n)
    cases drawn first. ``labelled_{r}p`` has max(1, round(r / 100 * len(train))) cases
    and every smaller ratio's labelled set lies inside every larger one's. All lists are sorted;
    the result depends only on the arguments.
    """
    _check_unique("train_ids", train_ids)
    _check_unique("test_ids", test_ids)
    shared = sorted(set(train_ids) & set(test_ids))
    if shared:
        raise DataError(f"expected train_ids and test_ids to be disjoint, shared: {shared}")
    if not 0.0 < eval_fraction < 1.0:
        raise SettingsError(f"expected 0 < eval_fraction < 1, got {eval_fraction}")
    bad_ratios = [r for r in ratios if not 0 < r <= 100]
    if bad_ratios:
        raise SettingsError(f"expected ratios in 1..100 (percent), got {bad_ratios}")

    pool = sorted(train_ids)
    rng = np.random.default_rng(seed)
    if not test_ids:
        if not 0.0 < test_fraction < 1.0:
            raise SettingsError(f"expected 0 < test_fraction < 1, got {test_fraction}")
        shuffled = [pool[i] for i in rng.permutation(len(pool))]
        n_test = max(1, _round_half_up(test_fraction * len(pool)))
        test_ids, pool = shuffled[:n_test], sorted(shuffled[n_test:])
    n_eval = max(1, _round_half_up(eval_fraction * len(pool)))
    if len(pool) - n_eval < 1:
        raise DataError(f"expected at least 2 training cases to split into train and eval, got {len(pool)}")
    shuffled = [pool[i] for i in rng.permutation(len(pool))]
    eval_ids, train = shuffled[:n_eval], shuffled[n_eval:]
    return {
        "train": sorted(train),
        "eval": sorted(eval_ids),
        "test": sorted(test_ids),
        **_labelled_subsets(train, ratios, rng),
    }


def labelled_subsets(train: list[str], ratios: Iterable[int], seed: int) -> dict[str, list[str]]:
    """Seeded nested ``labelled_{r}p``/``unlabelled_{r}p`` lists of a given ``train`` list."""
    return _labelled_subsets(sorted(train), ratios, np.random.default_rng(seed))


def _labelled_subsets(train: list[str], ratios: Iterable[int], rng: np.random.Generator) -> dict[str, list[str]]:
    # Labelled sets are prefixes of one permutation of train, so they nest by construction.
    labelling_order = [train[i] for i in rng.permutation(len(train))]
    splits = {}
    for ratio in sorted(set(ratios)):
        n_labelled = max(1, _round_half_up(ratio / 100 * len(train)))
        splits[labelled_name(ratio)] = sorted(labelling_order[:n_labelled])
        splits[unlabelled_name(ratio)] = sorted(labelling_order[n_labelled:])
    return splits


def published_name(name: str) -> str:
    """The file name DHC gives a split (``labelled_5p`` → ``labeled_5p.txt``)."""
    return name.replace("unlabelled", "unlabeled").replace("labelled", "labeled") + ".txt"


def assemble_splits(
    train_ids: list[str],
    test_ids: list[str],
    ratios: list[int],
    seed: int,
    eval_fraction: float,
    test_fraction: float,
    published_dir: Path | None = None,
) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Published split files where ``published_dir`` has them, seeded ones otherwise.

    ``train``/``eval``/``test`` come from the published files when all three are there; a
    ratio's labelled/unlabelled pair when both are. Missing ratios are drawn (nested, seeded)
    from whichever ``train`` is used. Returns the splits and one origin row per split
    (columns ORIGIN_COLUMNS) saying which is which.
    """
    published, sources = _read_published(published_dir)

    def is_published(*names: str) -> bool:
        return all(published_name(name) in published for name in names)

    base = ("train", "eval", "test")
    _check_complete(published_dir, [base, *((labelled_name(r), unlabelled_name(r)) for r in ratios)], is_published)
    missing = [r for r in ratios if not is_published(labelled_name(r), unlabelled_name(r))]
    if is_published(*base):
        splits = {name: published[published_name(name)] for name in base}
        splits |= labelled_subsets(splits["train"], missing, seed)
    else:
        # one random stream for everything: the same lists as when nothing is published
        splits = make_splits(train_ids, test_ids, missing, seed, eval_fraction, test_fraction)
    origins = dict.fromkeys(splits, f"generated, seed {seed}")
    published_names = [*base] if is_published(*base) else []
    published_names += [name(r) for r in ratios if r not in missing for name in (labelled_name, unlabelled_name)]
    for name in published_names:
        splits[name], origins[name] = published[published_name(name)], sources[published_name(name)]
    rows = [{"split": name, "file": f"{name}.txt", "origin": origin} for name, origin in origins.items()]
    return splits, rows


def _check_complete(published_dir: Path | None, groups, is_published) -> None:
    """A published folder gives each group of lists (train/eval/test; a ratio's labelled and
    unlabelled pair) whole or not at all: half a group would silently mix published and
    generated lists."""
    for group in groups:
        present = [name for name in group if is_published(name)]
        if present and len(present) < len(group):
            absent = [published_name(name) for name in group if name not in present]
            raise DataError(
                f"published split folder {published_dir} has {[published_name(n) for n in present]} but not "
                f"{absent}: publish the whole group (or none of it, to have it generated)"
            )


PUBLISHED_SOURCES = "sources.csv"
"""Written beside fetched split files: one row per file, columns file, url, sha256."""


def _read_published(published_dir: Path | None) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Sorted id lists of the published split files, and each file's origin text."""
    if published_dir is None:
        return {}, {}
    published_dir = Path(published_dir)
    lists = {path.name: sorted(read_case_list(path)) for path in published_dir.glob("*.txt")}
    sources = dict.fromkeys(lists, f"published, {published_dir}")
    if (published_dir / PUBLISHED_SOURCES).is_file():
        with open(published_dir / PUBLISHED_SOURCES, newline="") as f:
            for row in csv.DictReader(f):
                sources[row["file"]] = f"published, {row['url']} (sha256 {row['sha256']})"
    return lists, sources


ORIGIN_COLUMNS = ("split", "file", "origin")
ORIGIN_CSV = "origin.csv"


def write_origins(origins: list[dict[str, str]], out_dir: Path) -> None:
    """``origin.csv`` beside the split lists: which list was published and which generated."""
    write_csv(Path(out_dir) / ORIGIN_CSV, ORIGIN_COLUMNS, origins)


def split_origin(split_file: Path) -> str:
    """Where a split list came from (published or generated), as the split stage recorded it."""
    origin_csv = Path(split_file).parent / ORIGIN_CSV
    if not origin_csv.is_file():
        return f"unknown (no {ORIGIN_CSV} beside the split file)"
    with open(origin_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["file"] == Path(split_file).name:
                return row["origin"]
    return f"unknown ({Path(split_file).name} is not in {origin_csv})"


def write_splits(splits: dict[str, list[str]], out_dir: Path) -> None:
    """Write each split to ``out_dir/{name}.txt``, one id per line (each file atomically)."""
    for name, ids in splits.items():
        write_case_list(Path(out_dir) / f"{name}.txt", ids)


def validate_splits(split_dir: Path, ratios: Iterable[int], known_ids: set[str]) -> None:
    """Raise DataError listing every fault found in a split directory, with the offending ids.

    Faults: a missing file, an id listed twice in a file, an unknown id, eval/test overlapping
    each other or train, a labelled or unlabelled id outside train, labelled and unlabelled
    overlapping, or labelled + unlabelled not covering train.
    """
    split_dir = Path(split_dir)
    names = split_names(ratios)
    missing = [f"{name}.txt" for name in names if not (split_dir / f"{name}.txt").is_file()]
    if missing:
        raise DataError(f"split directory {split_dir}: expected files {missing} to exist")
    check_split_lists({name: read_case_list(split_dir / f"{name}.txt") for name in names}, ratios, known_ids, split_dir)


def split_names(ratios: Iterable[int]) -> list[str]:
    """train, eval, test, then each ratio's labelled and unlabelled list."""
    return ["train", "eval", "test", *(name(r) for r in ratios for name in (labelled_name, unlabelled_name))]


def check_split_lists(lists: dict[str, list[str]], ratios: Iterable[int], known_ids: set[str], where: object) -> None:
    """:func:`validate_splits` on lists in memory (``lists[name]``); ``where`` names them in the error."""
    lists = {name: lists[name] for name in split_names(ratios)}
    sets = {name: set(ids) for name, ids in lists.items()}
    faults: list[str] = []

    def fault(ids: Iterable[str], what: str) -> None:
        ids = sorted(ids)
        if ids:
            faults.append(f"{what}: {ids}")

    for name, ids in lists.items():
        fault(
            (i for i, n in Counter(ids).items() if n > 1),
            f"{name}.txt lists ids more than once",
        )
        fault(sets[name] - known_ids, f"{name}.txt has ids not in the data")
    fault(sets["eval"] & sets["test"], "eval.txt and test.txt overlap")
    fault(sets["train"] & sets["eval"], "train.txt and eval.txt overlap")
    fault(sets["train"] & sets["test"], "train.txt and test.txt overlap")
    for name in ("train", "eval", "test", *(labelled_name(r) for r in ratios)):
        if not lists[name]:  # TorchIO would say only "Subjects list is empty", mid-training
            faults.append(f"{name}.txt is empty: expected at least one case")
    for ratio in ratios:
        lab, unlab = labelled_name(ratio), unlabelled_name(ratio)
        fault(sets[lab] & sets[unlab], f"{lab}.txt and {unlab}.txt overlap")
        for name in (lab, unlab):
            fault(sets[name] - sets["train"], f"{name}.txt has ids not in train.txt")
            fault(
                sets[name] & (sets["eval"] | sets["test"]),
                f"{name}.txt has ids in eval.txt or test.txt",
            )
        fault(
            sets["train"] - sets[lab] - sets[unlab],
            f"{lab}.txt + {unlab}.txt miss ids of train.txt",
        )
    if faults:
        raise DataError(f"{where} is inconsistent:\n  " + "\n  ".join(faults))


def _check_unique(what: str, ids: list[str]) -> None:
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise DataError(f"expected each id once in {what}, repeated: {repeated}")
