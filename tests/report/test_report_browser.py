"""The results table and every figure, rendered by a real browser (headless Chromium from
Debian's packages, installed by the test where it is missing)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import apt_install, snakemake

TABLE = "results/tables/synthetic_results.html"
ORGAN_TABLE = "results/tables/synthetic_results_per_organ.html"
FIGURES = (
    "results/figures/synthetic_results_dice_per_class.png",
    "results/figures/synthetic_dice_vs_ratio.png",
    "results/figures/synthetic_results_training_curves.png",
    "results/figures/synthetic_qualitative.png",
)
WIDTH = 1400  # px: the window a reader's laptop gives the report
TABLE_WIDTH = 1000  # px: what the Snakemake report leaves beside its menu in such a window


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        failure = apt_install("chromium")
        if failure:
            pytest.skip(f"no Chromium to render the report in: {failure}")
        path = shutil.which("chromium")
    return path


def rendered_dom(chromium: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, in a window WIDTH pixels wide."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={WIDTH},1000", "--allow-file-access-from-files",
        "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def measured(html_page: str, script: str) -> str:
    """``html_page`` with ``script`` run when everything has loaded; it writes what it measures
    into ``<body data-measured>``."""
    run = f"<script>window.addEventListener('load', () => {{ {script} }});</script>"
    return html_page.replace("</body>", run + "</body>")


@pytest.mark.parametrize("table", [TABLE, ORGAN_TABLE])
def test_the_results_tables_fit_a_laptop_window_without_scrolling(
    table: str, tiny_run: Path, chromium: str, tmp_path: Path
):
    page = tmp_path / "table.html"
    width = (
        "document.body.dataset.measured = document.documentElement.scrollWidth + ' ' + "
        "document.querySelector('table').scrollWidth + ' ' + document.querySelectorAll('tbody tr').length;"
    )
    page.write_text(measured((tiny_run / table).read_text(), width))
    found = re.search(r'data-measured="(\d+) (\d+) (\d+)"', rendered_dom(chromium, page, tmp_path / "p"))
    page_width, table_width, rows = map(int, found.groups())
    assert rows == 6  # 3 methods x 2 ratios
    assert page_width <= WIDTH and table_width <= TABLE_WIDTH


def test_every_figure_and_the_report_render_in_the_browser(tiny_run: Path, chromium: str, tmp_path: Path):
    images = "".join(f'<img src="{(tiny_run / f).as_uri()}" alt="{Path(f).name}">' for f in FIGURES)
    sizes = "document.body.dataset.measured = [...document.images].map(i => i.alt + ':' + i.naturalWidth).join(' ');"
    page = tmp_path / "figures.html"
    page.write_text(measured(f"<html><body>{images}</body></html>", sizes))
    loaded = dict(
        item.split(":")
        for item in re.search(r'data-measured="([^"]*)"', rendered_dom(chromium, page, tmp_path / "p")).group(1).split()
    )
    assert set(loaded) == {Path(f).name for f in FIGURES}
    assert all(int(width) > 300 for width in loaded.values()), loaded
    # the Snakemake report: its page script runs and lists the results' categories
    snakemake(tiny_run, "--report", "results/report.html")
    dom = rendered_dom(chromium, tiny_run / "results" / "report.html", tmp_path / "r")
    visible = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    assert "MICD and its baselines under DHC" in visible and "Figures" in visible and "Tables" in visible
    for output in (TABLE, ORGAN_TABLE, *FIGURES):
        assert Path(output).name in dom
