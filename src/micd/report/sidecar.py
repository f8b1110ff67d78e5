"""Provenance sidecars: every table and figure file gets ``{file}.provenance.json`` beside it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from micd.atomic import atomic_write
from micd.evaluation.measures import RUN_KEYS
from micd.provenance import package_versions, provenance

REPORT_PACKAGES = ("matplotlib", "seaborn", "pillow")
"""Packages that draw the report, recorded besides :data:`micd.provenance.PACKAGES`."""


def sidecar_path(output: Path | str) -> Path:
    return Path(f"{output}.provenance.json")


def write_provenance(
    outputs: Iterable[Path | str],
    config: Mapping[str, Any],
    runs: pd.DataFrame,
    **extra: Any,
) -> None:
    """Write the provenance sidecar of each output file.

    Each records the file's name, ``config`` (the workflow settings the rule passed), the
    runs it summarises (the distinct :data:`~micd.evaluation.measures.RUN_KEYS` of ``runs``),
    ``extra`` (e.g. a reference file), the code version, and the versions of the packages
    that trained, scored and drew it.
    """
    keys = list(RUN_KEYS)
    record = provenance(
        {
            "config": dict(config),
            "runs": runs[keys].drop_duplicates().sort_values(keys).to_dict("records"),
            **extra,
        }
    )
    record["packages"].update(package_versions(REPORT_PACKAGES))
    for output in outputs:
        text = json.dumps({"output": Path(output).name, **record}, indent=2, sort_keys=True)
        atomic_write(sidecar_path(output), text + "\n")
