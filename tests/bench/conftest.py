"""The bench tools import each other by file name (``from in_process import ...``), as
``python bench/TOOL.py`` runs them with its folder first on the module path: the tests here
import them the same way, the tools of ``bench/`` and the benchmark's glue in ``bench/history/``."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
for folder in (BENCH / "history", BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
