"""The package's house (README, Layout): stages over shared leaves, no import running back up.

pyproject.toml's import-linter contract names every package and top-level module of micd in
layers; `lint-imports` checks it here, so a change that imports upwards fails the suite. The
second test finds import circles between modules, which layers alone do not rule out within a
package.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]


def test_the_layers_contract_is_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_names_every_part_of_the_package():
    named = {part.strip() for layer in CONTRACT["layers"] for part in layer.split("|")}
    package = ROOT / "src" / "micd"
    parts = {f"micd.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    parts |= {f"micd.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert parts == named


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("micd")
    circles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain:
                circles.append(" -> ".join((importer, *chain)))
    assert not circles, "import circles:\n" + "\n".join(circles)
