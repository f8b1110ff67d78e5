"""The ``micd`` command line explains itself: a version, and help text for every option."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from micd.cli import parser

MICD = Path(sys.executable).parent / "micd"  # the console script the package installs


def micd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MICD), *args], capture_output=True, text=True, timeout=120)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def test_micd_version_prints_the_package_version():
    result = micd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"micd {version('micd')} (")  # and the commit: tests/test_command_line.py


def test_micd_train_help_describes_each_option_and_the_json_settings():
    result = micd("train", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option in ("--data-dir", "--family", "--ratio", "--seed", "--labelled", "--threads"):
        assert option in text
    assert "text file of case ids, one per line" in text
    assert "JSON object of training settings (config/schema.yaml: train)" in text
    assert "JSON object of the method's settings (config/schema.yaml: method_settings" in text


def test_micd_report_is_the_old_name_of_micd_tables_and_says_so():
    """For one release `micd report` takes the options of `micd tables` and runs it (tests/report/test_tables.py)."""
    result = micd("report", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "micd report is now micd tables; the old name goes in the next release\n"
    assert "Old name of `micd tables`, which it runs; it goes in the next release." in " ".join(result.stdout.split())
    options = {name: [a.option_strings for a in subcommands()[name]._actions] for name in ("tables", "report")}
    assert options["report"] == options["tables"]
    assert micd("tables", "--help").stderr == ""


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_of_every_subcommand_has_help(name):
    options = [a for a in subcommands()[name]._actions if a.option_strings and a.dest != "help"]
    assert options, f"micd {name} has no options"
    silent = [a.option_strings[0] for a in options if not (a.help or "").strip()]
    assert not silent, f"micd {name}: options without help: {silent}"
    text = subcommands()[name].format_help()  # argparse %-formats each help: a stray % raises here
    assert all(a.option_strings[0] in text for a in options)


@pytest.mark.slow
def test_a_figure_of_an_unknown_format_is_refused_before_anything_runs(tmp_path):
    """A usage error naming the file and the formats, not a traceback after the drawing."""
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("")
    result = micd("dice-vs-ratio", "--metrics", str(metrics), "--methods", "micd", "--figure", str(tmp_path / "f.jpg"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'f.jpg'}: a figure file ends in one of .png, .pdf, .svg" in result.stderr
    assert list(tmp_path.iterdir()) == [metrics]
