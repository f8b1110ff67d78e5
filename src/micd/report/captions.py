"""Captions of the results tables, as a paper prints them: first what the table shows (data set,
labelled ratios, the scores and the seeds they summarise), then what bold, p and marked rows mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from micd.data.classes import OrganClass
from micd.methods import display_name
from micd.report.stats import MIN_PAIRED_CASES, REFERENCE_METHOD
from micd.report.tables import MISSING, PUBLISHED_MARK, format_ratio

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
class TableFacts:
    """What the captions of one results table state: its data set, labelled ratios, seeds and test cases;
    ``subject`` names the table where it is not the main results (``ablation``); ``note`` ends each caption."""

    dataset: str
    family: str
    ratios: Sequence[int]
    seeds: Sequence[int]
    n_cases: int
    has_p: bool
    has_published: bool
    subject: str = ""
    note: str = ""

    def headline(self, scores: str, spread: bool) -> str:
        subject = f", {self.subject}" if self.subject else ""
        ratios = word_list([format_ratio(r) for r in self.ratios])
        return (
            f"{data_set_name(self.dataset, self.family)}{subject}, {ratios} labelled: "
            f"test {scores}, {over_seeds(self.seeds, spread)}."
        )

    def published(self) -> str:
        if self.has_published:
            return (
                f"{PUBLISHED_MARK}: as reported by DHC (Wang & Li, MICCAI 2023), ± std over 3 runs where published; "
                "these rows do not compete for bold."
            )
        return "No published results exist for this data set."


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
    return " ".join([*sentences, facts.published(), facts.note]).strip()


def organ_caption(facts: TableFacts, classes: Sequence[OrganClass], shown: Sequence[str]) -> str:
    """The per-organ table's caption; ``shown`` are the organ columns' short names, spelled out."""
    names = {c.short: c.name for c in classes}
    key = "; ".join(f"{short}: {names[short]}" for short in shown) + "."
    sentences = [facts.headline("Dice (%) per organ", spread=False), key, BOLD]
    return " ".join([*sentences, facts.published(), facts.note]).strip()
