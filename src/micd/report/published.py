"""Published results shown beside ours (``config/published/``): long CSVs read into one table, each
row carrying who reported it (``reported_by``) and the pipeline it was trained and scored on
(``pipeline``), and the mark that the results tables give that pair.

A file's columns: ``dataset`` (the family, ``amos``/``synapse``), ``labeled_percent``, ``method``,
``metric`` (``dice`` %/``asd`` voxels), ``class`` (``mean`` or an organ's short name), ``value``,
``std``; then, optionally, ``pipeline`` (a name of :data:`PIPELINES`) and ``reported_by`` (the paper
whose table it is, as the caption cites it). A file without them (DHC's tables) or an empty cell
means DHC's pipeline as reported by DHC's paper; other columns (``source``) are kept, not shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from micd.data.io import file_digest
from micd.errors import DataError
from micd.methods import display_name

REQUIRED_COLUMNS: list[str] = ["dataset", "labeled_percent", "method", "metric", "class", "value", "std"]
DHC_PIPELINE = "dhc"
DHC_PAPER = "DHC (Wang & Li, MICCAI 2023)"
"""Who reported the rows of a file without ``reported_by``: the format is that of DHC's tables."""

PIPELINES: dict[str, str] = {
    DHC_PIPELINE: "DHC's pipeline",
    "ga": "GA's pipeline",
}
"""The pipelines published rows come from: DHC's (its preprocessing, split files, 64x128x128
patches), and GA's (Qi, Wu & Chan, ECCV 2024: its own preprocessed copies, 96x96x96 patches,
its schedule; ``docs/protocol.md``)."""
PIPELINE_DETAILS: dict[tuple[str, str], str] = {
    ("ga", "amos"): "GA's own AMOS preprocessing, 96³ patches",
    ("ga", "synapse"): "MagicNet's Synapse preprocessing, 96³ patches",
}
"""What a caption adds to a pipeline's name for a family, where the pipeline is not DHC's."""

MARKS: tuple[str, ...] = ("†", "‡", "§", "¶")
"""The marks of published rows, one per (reported_by, pipeline) in the order the files give them
(DHC's own rows first: ``†``); a fifth pair gets ``††``, and so on."""


def mark(index: int) -> str:
    return MARKS[index % len(MARKS)] * (index // len(MARKS) + 1)


def mark_rank(text: str) -> int:
    """The index that :func:`mark` gave ``text``: marks sort in the order of the files."""
    return (len(text) - 1) * len(MARKS) + MARKS.index(text[0])


def pipeline_description(pipeline: str, family: str) -> str:
    """``GA's pipeline (MagicNet's Synapse preprocessing, 96³ patches)``: a pipeline as a caption names it."""
    detail = PIPELINE_DETAILS.get((pipeline, family))
    return f"{PIPELINES[pipeline]} ({detail})" if detail else PIPELINES[pipeline]


def complete(reference: pd.DataFrame, where: str = "published results") -> pd.DataFrame:
    """``reference`` with ``pipeline`` and ``reported_by`` filled (DHC's where absent or empty) and
    each row's ``mark``; a missing column or an unknown pipeline is a :class:`DataError` naming ``where``."""
    missing = [c for c in REQUIRED_COLUMNS if c not in reference.columns]
    if missing:
        raise DataError(f"{where}: no column {', '.join(missing)} (a published file has {', '.join(REQUIRED_COLUMNS)})")
    reference = reference.copy()
    for column, default in (("pipeline", DHC_PIPELINE), ("reported_by", DHC_PAPER)):
        values = reference[column] if column in reference.columns else pd.Series(pd.NA, index=reference.index)
        reference[column] = values.where(values.notna() & (values.astype(str).str.strip() != ""), default)
    unknown = sorted(set(reference["pipeline"]) - set(PIPELINES))
    if unknown:
        raise DataError(f"{where}: unknown pipeline {', '.join(map(repr, unknown))}; known: {', '.join(PIPELINES)}")
    pairs = list(dict.fromkeys(zip(reference["reported_by"], reference["pipeline"], strict=True)))
    marks = {pair: mark(i) for i, pair in enumerate(pairs)}
    reference["mark"] = [marks[pair] for pair in zip(reference["reported_by"], reference["pipeline"], strict=True)]
    return reference


def read_published(paths: Sequence[Path | str]) -> pd.DataFrame:
    """The published files as one table (:func:`complete`), in the given order: the first file's
    pairs take the first marks."""
    frames = [complete(pd.read_csv(path), where=str(path)) for path in paths] or [
        pd.DataFrame(columns=REQUIRED_COLUMNS)
    ]
    return complete(pd.concat(frames, ignore_index=True))


def file_records(paths: Iterable[Path | str]) -> list[dict[str, str]]:
    """What a provenance sidecar records of each published file: its path and sha256."""
    return [{"path": str(path), "sha256": file_digest(Path(path))} for path in paths]


_QUALIFIER = re.compile(r" \([^()]*\)$")


def belongs_to(published_method: str, method: str) -> bool:
    """Whether a published row is one of ``method``'s: its name is the method's paper name
    (:func:`micd.methods.display_name`), or that name with a qualifier in parentheses
    (``DHC (re-run)``, ``GA-CPS (GA's pipeline)``)."""
    name = display_name(method)
    return published_method == name or _QUALIFIER.sub("", published_method) == name
