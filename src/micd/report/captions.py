"""Captions of the results tables, as a paper prints them: first what the table shows (data set,
labelled ratios, the scores and the seeds they summarise), then what bold, p and marked rows mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from micd.data.classes import OrganClass
from micd.methods import display_name
from micd.report.published import mark_rank, pipeline_description
from micd.report.stats import MIN_PAIRED_CASES, REFERENCE_METHOD
from micd.report.tables import MISSING, PUBLISHED, format_ratio

FAMILY_NAMES = {"amos": "AMOS", "synapse": "Synapse", "synthetic": "Synthetic"}


def word_list(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def data_set_name(dataset: str, family: str) -> str:
    """``Synthetic data set``; a data set not named after its family: ``Data set amos_small (AMOS)``."""
    name = FAMILY_NAMES.get(family, family)
    return f"{name} data set" if dataset == family else f"Data set {dataset} ({name})"


def over_seeds(seeds: Sequence[int], spread: bool) -> str:
    listed = ", ".join(map(str, seeds))
    if len(seeds) == 1:
        return f"seed {listed}"
    return f"mean ± std over seeds {listed}" if spread else f"mean over seeds {listed}"


@dataclass(frozen=True)
class PublishedSource:
    """The published rows of one mark: who reported them, on which pipeline (:mod:`micd.report.published`)."""

    mark: str
    reported_by: str
    pipeline: str


def published_sources(table: pd.DataFrame) -> list[PublishedSource]:
    """The marks of a table's published rows, in the marks' order."""
    published = table[table["source"] == PUBLISHED]
    if published.empty:
        return []
    sources = {PublishedSource(*row) for row in published[["mark", "reported_by", "pipeline"]].itertuples(index=False)}
    return sorted(sources, key=lambda source: mark_rank(source.mark))


@dataclass(frozen=True)
class TableFacts:
    """What the captions of one results table state: its data set, labelled ratios, seeds and test cases;
    ``published`` the marks of its published rows (:func:`published_sources`); ``main_published`` those the
    main table shows where it shows only the published rows of ``main_methods`` (paper names; None: all);
    ``subject`` names the table where it is not the main results (``ablation``); ``note`` ends each caption."""

    dataset: str
    family: str
    ratios: Sequence[int]
    seeds: Sequence[int]
    n_cases: int
    has_p: bool
    published: Sequence[PublishedSource] = ()
    main_published: Sequence[PublishedSource] | None = None
    main_methods: Sequence[str] | None = None
    subject: str = ""
    note: str = ""

    def headline(self, scores: str, spread: bool) -> str:
        subject = f", {self.subject}" if self.subject else ""
        ratios = word_list([format_ratio(r) for r in self.ratios])
        return (
            f"{data_set_name(self.dataset, self.family)}{subject}, {ratios} labelled: "
            f"test {scores}, {over_seeds(self.seeds, spread)}."
        )

    def marked(self, sources: Sequence[PublishedSource]) -> str:
        """What each mark of ``sources`` means."""
        if not sources:
            return ""
        meanings = "; ".join(
            f"{source.mark}: as reported by {source.reported_by} on "
            f"{pipeline_description(source.pipeline, self.family)}"
            for source in sources
        )
        return f"{meanings}. Marked rows are published numbers (± the published std where given) and take no bold."

    def published_in_main(self) -> str:
        if not self.published:
            return "No published results exist for this data set."
        if self.main_methods is None:
            return self.marked(self.published)
        if not self.main_methods:
            return "This table shows no published rows; the per-organ table shows them all."
        selection = (
            f"Of the published rows this table shows those of {word_list(list(self.main_methods))}; "
            "the per-organ table shows all."
        )
        return f"{self.marked(self.main_published or ())} {selection}".strip()

    def published_in_organs(self) -> str:
        return self.marked(self.published) if self.published else "No published results exist for this data set."


BOLD = "Bold: the best of our rows within each labelled ratio (none where all tie)."


def main_caption(facts: TableFacts) -> str:
    """The main table's caption (method, mean Dice, mean ASD, p)."""
    reference = display_name(REFERENCE_METHOD)
    sentences = [facts.headline("Dice (%) and ASD (voxels)", spread=True), BOLD]
    if facts.has_p:
        sentences.append(
            f"p: two-sided paired Wilcoxon signed-rank test against {reference} over the {facts.n_cases} test "
            f"cases, each case's mean Dice averaged over seeds; {MISSING} where undefined ({reference} itself, "
            f"or fewer than {MIN_PAIRED_CASES} non-zero differences)."
        )
    return " ".join([*sentences, facts.published_in_main(), facts.note]).strip()


def organ_caption(facts: TableFacts, classes: Sequence[OrganClass], shown: Sequence[str]) -> str:
    """The per-organ table's caption; ``shown`` are the organ columns' short names, spelled out."""
    names = {c.short: c.name for c in classes}
    key = "; ".join(f"{short}: {names[short]}" for short in shown) + "."
    sentences = [facts.headline("Dice (%) per organ", spread=False), key, BOLD]
    return " ".join([*sentences, facts.published_in_organs(), facts.note]).strip()
