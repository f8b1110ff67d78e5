"""The words of the report's landing page (report/workflow.rst), which can read only the config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from micd.methods import display_name
from micd.report.tables import format_ratio


def listed(items: Iterable[object]) -> str:
    """Items as a sentence lists them: ``a, b, c``."""
    return ", ".join(map(str, items))


def landing_words(config: Mapping[str, Any]) -> dict[str, str]:
    """What was run, in words: the data sets, labelled ratios, methods (as the tables name them)
    and seeds, e.g. ``{"methods": "V-Net (labelled only), MICD", "ratios": "5 %, 10 %", ...}``."""
    return {
        "datasets": listed(config["run_datasets"] or config["datasets"]),
        "ratios": listed(format_ratio(ratio) for ratio in config["ratios"]),
        "methods": listed(display_name(method) for method in config["methods"]),
        "seeds": listed(config["seeds"]),
    }
