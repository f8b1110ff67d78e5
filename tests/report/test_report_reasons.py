"""A report re-run says which setting changed (issue 38): each report setting is a parameter of
the report_config job, so Snakemake's reason names it, not two digests or the whole config."""

from __future__ import annotations

import json

import pytest
import yaml
from workflow_helpers import TINY_CONFIG, copy_workflow, snakemake


@pytest.mark.workflow
def test_a_changed_setting_is_named_in_the_reason_and_the_file_is_the_settings(tmp_path):
    copy_workflow(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    target = "results/synthetic/report_config.json"
    run = snakemake(tmp_path, "--cores", "1", "--printshellcmds", target)
    out = run.stdout + run.stderr
    assert "Shell command: None" not in out and "Shell command: printf '%s\\n' '{" in out
    written = json.loads((tmp_path / target).read_text())
    assert written["train"]["max_epochs"] == 1 and written["methods"] == ["fully", "supervised", "micd"]
    assert (tmp_path / "results/logs/synthetic/report_config.log").read_text().endswith(f"  {target}\n")

    changed = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "max_epochs": 3}, "seeds": [0, 1]}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    dry = snakemake(tmp_path, "-n", target, configfiles=("changed.yaml",))
    reasons = [line.strip() for line in dry.stdout.splitlines() if line.strip().startswith("reason:")]
    assert len(reasons) == 1, dry.stdout
    assert reasons[0].startswith("reason: Params have changed since last execution")
    before, now = reasons[0].split(" before: ")[1].split(" now: ")
    # the changed settings and nothing else (the two of each side in either order)
    assert sorted(before.strip().strip("'").split("','")) == ["seeds=[0]", "train.max_epochs=1"], reasons[0]
    assert sorted(now.strip().strip("'").split("','")) == ["seeds=[0, 1]", "train.max_epochs=3"], reasons[0]
    assert len(reasons[0]) < 300
