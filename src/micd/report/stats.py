"""Paired Wilcoxon signed-rank tests of each method against MICD over the test cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

REFERENCE_METHOD = "micd"
P_COLUMN = f"p_vs_{REFERENCE_METHOD}"

MIN_PAIRED_CASES = 6
"""Fewest non-zero paired differences tested: with five, the exact two-sided p is at least 0.0625."""

_GROUP = ["dataset", "ratio"]


def case_dice(per_case: pd.DataFrame) -> pd.DataFrame:
    """Each test case's mean foreground Dice, averaged over seeds.

    One row per ``(dataset, ratio, method, case_id)`` with column ``dice``: the mean over the
    foreground classes of each run's Dice on that case, then the mean over seeds.
    """
    foreground = per_case[per_case["class_id"] != 0]
    per_run = foreground.groupby([*_GROUP, "method", "seed", "case_id"], as_index=False)["dice"].mean()
    return per_run.groupby([*_GROUP, "method", "case_id"], as_index=False)["dice"].mean()


def paired_wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of paired differences; NaN where undefined.

    Zero differences are dropped (scipy's ``zero_method="wilcox"``); with fewer than
    :data:`MIN_PAIRED_CASES` left (including all zero) the test is not run, since scipy would
    warn and return NaN, or a p-value that cannot reach any usual significance level.
    """
    nonzero = np.asarray(differences, dtype=float)
    nonzero = nonzero[nonzero != 0]
    if len(nonzero) < MIN_PAIRED_CASES:
        return float("nan")
    return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def p_values_vs_micd(per_case: pd.DataFrame) -> pd.DataFrame:
    """p of each method against :data:`REFERENCE_METHOD` per (dataset, ratio), paired by ``case_id``.

    Columns ``dataset, ratio, method`` and :data:`P_COLUMN`; NaN for the reference itself, where
    the reference has no runs, and where :func:`paired_wilcoxon_p` is undefined.
    """
    scores = case_dice(per_case)
    reference = scores[scores["method"] == REFERENCE_METHOD].drop(columns="method")
    paired = scores.merge(reference, on=[*_GROUP, "case_id"], how="left", suffixes=("", "_reference"))
    paired["difference"] = paired["dice"] - paired["dice_reference"]
    rows = []
    for (dataset, ratio, method), group in paired.groupby([*_GROUP, "method"], sort=False):
        is_reference = method == REFERENCE_METHOD
        p = float("nan") if is_reference else paired_wilcoxon_p(group["difference"].dropna().to_numpy())
        rows.append({"dataset": dataset, "ratio": ratio, "method": method, P_COLUMN: p})
    return pd.DataFrame(rows, columns=[*_GROUP, "method", P_COLUMN])
