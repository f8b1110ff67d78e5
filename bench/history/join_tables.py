"""Join results tables that parts of the benchmark wrote apart into one, and rank it against DHC.

A part of the benchmark (bench/history/benchmark_parts.sh) that trains some of the rows writes a table
of those rows only (``results/tables/synthetic_benchmark_results.csv``, kept under
``bench/results/``). This joins such tables of one labelled ratio into one table in
``config/benchmark.yaml``'s row order (Markdown and CSV, via the report's own formatting) and
prints Spearman's rank correlation of our mean Dice with the mean Dice that DHC's paper
published for AMOS at the same ratio, over the semi-supervised methods both have (the upper
bound, trained on every case, is left out of the ranking). A p against MICD is kept as
each part's table computed it: rows of a part without MICD have none.

    python bench/history/join_tables.py TABLE.csv TABLE.csv --out bench/results/synthetic_benchmark_10p
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml
from scipy.stats import spearmanr

from micd.methods import display_name, trains_on_every_case
from micd.report.table_formats import to_markdown
from micd.report.tables import TABLE_KEYS, main_display, order_rows

ROOT = Path(__file__).resolve().parents[2]


def join_tables(tables: list[pd.DataFrame], method_order: list[str]) -> pd.DataFrame:
    joined = pd.concat(tables, ignore_index=True)
    repeated = joined[joined.duplicated(TABLE_KEYS, keep=False)]
    if not repeated.empty:
        rows = ", ".join(f"{r.method} at {r.ratio} %" for r in repeated.drop_duplicates(TABLE_KEYS).itertuples())
        raise SystemExit(f"the tables overlap: {rows} in more than one; join tables of distinct rows")
    return order_rows(joined, method_order).reset_index(drop=True)


def rank_against_published(table: pd.DataFrame, published: pd.DataFrame, family: str) -> dict:
    """Spearman's rho of our mean Dice and the published one, per ratio, over the semi-supervised
    methods both tables have."""
    means = published[
        (published["dataset"] == family) & (published["metric"] == "dice") & (published["class"] == "mean")
    ]
    ranks = {}
    for ratio, block in table.groupby("ratio"):
        theirs = means[means["labeled_percent"] == ratio].set_index("method")["value"]
        block = block[[not trains_on_every_case(m) for m in block["method"]]]
        ours = block.assign(name=block["method"].map(display_name)).set_index("name")["dice_mean"]
        shared = [name for name in ours.index if name in theirs.index]
        if len(shared) < 3:
            continue
        rho = spearmanr(ours[shared], theirs[shared]).statistic
        ranks[int(ratio)] = {"rho": round(float(rho), 3), "methods": shared}
    return ranks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="+", type=Path, help="results-table CSVs of distinct rows")
    p.add_argument("--out", type=Path, required=True, help="path without suffix: .md and .csv are written")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "benchmark.yaml")
    p.add_argument("--published", type=Path, default=ROOT / "config" / "published" / "dhc_tables.csv")
    p.add_argument("--rank-against", default="amos", help="the published family to rank against")
    args = p.parse_args()
    methods = yaml.safe_load(args.config.read_text())["methods"]
    table = join_tables([pd.read_csv(t) for t in args.tables], methods)
    ranks = rank_against_published(table, pd.read_csv(args.published), args.rank_against)
    sources = ", ".join(t.name for t in args.tables)
    caption = (
        f"Joined from {sources}. p vs MICD as each part computed it (– where MICD was not in the part). "
        + " ".join(
            f"Spearman's rho of mean Dice against DHC's published {args.rank_against.upper()} {ratio} % column: "
            f"{r['rho']:.2f} over the {len(r['methods'])} semi-supervised methods both have."
            for ratio, r in ranks.items()
        )
    )
    args.out.with_suffix(".md").write_text(to_markdown(main_display(table), caption))
    args.out.with_suffix(".csv").write_text(table.to_csv(index=False))
    print(json.dumps({"rows": len(table), "spearman": ranks}, indent=1))


if __name__ == "__main__":
    main()
