"""What a data set needs from its user before the workflow can fetch it, checked when the
workflow is planned rather than when its fetch job runs (hours into a cluster run, beside a
23 GB download).

- ``source: zenodo`` (AMOS): the licence read and ``licence_accepted: true`` set;
- ``source: synapse``: ``RawData.zip`` placed at ``synapse.placed``, or a personal access token
  in the environment variable ``synapse.token_env``.

A data set whose archive was already fetched (or extracted) needs neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

FETCHED = ("download/archive.zip", "raw")  # under results/{dataset}/: the fetch's output and the extract's


def fetched(name: str, workdir: Path) -> bool:
    return any((workdir / "results" / name / part).exists() for part in FETCHED)


def dataset_prerequisite(
    name: str, dataset: Mapping[str, Any], workdir: Path, environ: Mapping[str, str]
) -> str | None:
    """What data set ``name`` still lacks before it can be fetched, in one sentence; None if nothing."""
    if fetched(name, workdir):
        return None
    if dataset["source"] == "zenodo" and not dataset.get("licence_accepted", False):
        return (
            f"{name}: its licence ({dataset.get('licence', 'its licence')}) is not accepted yet: read it, then set "
            f"datasets.{name}.licence_accepted: true in your config file (docs/datasets.md)"
        )
    if dataset["source"] == "synapse":
        synapse = dataset["synapse"]
        placed, token_env = synapse.get("placed"), synapse.get("token_env", "SYNAPSE_AUTH_TOKEN")
        if (placed is None or not (workdir / placed).is_file()) and not environ.get(token_env):
            where = f"no RawData.zip at {placed} and " if placed is not None else ""
            return (
                f"{name}: {where}${token_env} is not set: place the archive there or export a synapse.org "
                "personal access token (docs/datasets.md)"
            )
    return None


def missing_prerequisites(
    config: Mapping[str, Any], names: list[str], workdir: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    """Data set name -> what it lacks, for the data sets ``names`` that lack something."""
    found = {name: dataset_prerequisite(name, config["datasets"][name], workdir, environ) for name in names}
    return {name: problem for name, problem in found.items() if problem}


def plan_message(missing: Mapping[str, str], stopped: bool = False) -> str:
    """What a dry run says below its plan (``stopped`` False), or a run that stops before its
    first job, when data sets lack their prerequisites: one line each."""
    many = len(missing) > 1
    count = f"{len(missing)} data set{'s' if many else ''} of this run lack{'' if many else 's'}"
    needs = f"what {'their' if many else 'its'} download needs"
    leave_out = f"--config 'run_datasets=[...]' leaves {'them' if many else 'it'} out"
    if stopped:
        first, last = f"Stopped before the first job: {count} {needs}:", f"Provide it, or {leave_out}."
    else:
        first = f"Not ready: {count} {needs}:"
        last = (
            f"A run without -n stops before its first job while {'their downloads are' if many else 'its download is'} "
            f"planned; {leave_out}."
        )
    return "\n".join([first, *(f"  {problem}" for problem in missing.values()), last])
