"""One row per training run of the synthetic benchmark: how long it took and how it learnt.

Reads each run's ``train_log.jsonl`` and ``validation.csv`` and Snakemake's benchmark file of
its train job, and writes ``bench/results/synthetic_benchmark_runs.csv``: dataset, ratio,
method, seed, iterations, the median seconds of one step's computation and data wait, the
train job's wall time, the best eval Dice and its epoch, the eval Dice gained over the last
quarter of the epochs (the convergence criterion of docs/benchmark.md), and, from the
provenance in its ``model.pt``: when and at which commit its best weights were saved, the first
12 hex digits of the fingerprint of the data it read, and the CPU instruction set its kernels
used (these tell apart two trainings of one configuration that part, docs/benchmark.md). Rows
of runs no longer under ``--results`` are kept, so the CSV gathers the runs of every part and
session; a run trained again replaces its row.

Each summarised run's ``validation.csv`` and ``metrics.csv`` (per test case) are copied, and
its provenance written as ``provenance.json``, to
``bench/results/<dataset>/runs/<ratio>p/<method>/seed<k>/``, the same layout as ``results/``:
the evidence behind a recorded table outlives the results folder (a new machine, a clean
clone), and tables and paired tests over parts run apart can be rebuilt from it
(``micd report --metrics bench/results/synthetic_benchmark/runs/10p/*/seed0/metrics.csv ...``).
With ``--figure`` it draws the eval Dice against epoch of every archived run, one panel per
labelled ratio.

    python bench/history/benchmark_summary.py [--results results] [--dataset synthetic_benchmark] [--figure PNG]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RUN_KEY = ["ratio", "method", "seed"]
ARCHIVED_FILES = ("validation.csv", "metrics.csv")


def run_provenance(run: Path) -> dict:
    """The provenance a finished run's ``model.pt`` carries: settings, code, data, host."""
    from micd.torch_files import load_weights_only  # torch: only where a model is read

    return load_weights_only(run / "model.pt").get("provenance", {})


def summarise_run(run: Path, benchmarks: Path, provenance: dict) -> dict:
    ratio, method, seed = run.parent.parent.name.removesuffix("p"), run.parent.name, run.name.removeprefix("seed")
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    validation = pd.read_csv(run / "validation.csv")
    last_epoch = int(validation["epoch"].max())
    start_of_last_quarter = validation[validation["epoch"] >= 0.75 * last_epoch].iloc[0]
    best = validation.loc[validation["eval_mean_dice"].idxmax()]
    wall = benchmarks / f"train_{ratio}p_{method}_seed{seed}.tsv"
    return {
        "ratio": int(ratio),
        "method": method,
        "seed": int(seed),
        "iterations": len(log),
        "compute_s_median": round(statistics.median(r["compute_s"] for r in log), 3),
        "data_s_median": round(statistics.median(r["data_s"] for r in log), 4),
        "skipped_steps": sum("skipped" in r for r in log),
        "train_wall_min": round(pd.read_csv(wall, sep="\t")["s"].iloc[0] / 60, 1) if wall.is_file() else None,
        "best_eval_dice": round(float(best["eval_mean_dice"]), 2),
        "best_epoch": int(best["epoch"]),
        "final_eval_dice": round(float(validation["eval_mean_dice"].iloc[-1]), 2),
        "last_quarter_gain": round(
            float(validation["eval_mean_dice"].iloc[-1] - start_of_last_quarter["eval_mean_dice"]), 2
        ),
        # which training this is (a run trained again replaces its row) and, blank for runs
        # trained before runs recorded them, what it read and computed with
        "trained": provenance.get("created"),
        "code_version": provenance.get("code_version"),
        "data_sha256": provenance.get("data_sha256", "")[:12] or None,
        "cpu_capability": provenance.get("compute", {}).get("cpu_capability"),
    }


def learning_curves_figure(runs: list[Path], path: Path) -> None:
    """Eval Dice against epoch of the given (archived) runs, one panel per ratio, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = sorted({run.parent.parent.name for run in runs}, key=lambda r: int(r.removesuffix("p")))
    methods = sorted({run.parent.name for run in runs})
    # more methods and variants than tab20 has colours: the rest repeat them dashed
    palette = plt.get_cmap("tab20").colors
    styles = {m: (palette[i % len(palette)], "-" if i < len(palette) else "--") for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(ratios), figsize=(7 * len(ratios), 5), squeeze=False, sharey=True)
    for ax, ratio in zip(axes[0], ratios):
        for run in (r for r in runs if r.parent.parent.name == ratio):
            validation = pd.read_csv(run / "validation.csv")
            method, seed = run.parent.name, run.name
            colour, line = styles[method]
            ax.plot(
                validation["epoch"],
                validation["eval_mean_dice"],
                color=colour,
                ls=line,
                lw=1.2,
                label=method if seed == "seed0" else None,
            )
        ax.set_title(f"{ratio.removesuffix('p')} % labelled")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval mean Dice (%)")
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper left")
    fig.suptitle(f"Synthetic benchmark: eval Dice during training ({len(runs)} archived runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def archive_run(run: Path, results: Path, archive: Path, provenance: dict) -> Path:
    """Copy the run's small outputs, and write its provenance, to the same relative folder under ``archive``."""
    destination = archive / run.relative_to(results)
    destination.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, destination / name)
    (destination / "provenance.json").write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
    return destination


def merge_rows(path: Path, rows: list[dict]) -> pd.DataFrame:
    """The CSV's earlier rows, those of the runs summarised now replaced by their new rows."""
    table = pd.DataFrame(rows)
    if path.is_file():
        old = pd.read_csv(path)
        if rows:
            old = old[~old.set_index(RUN_KEY).index.isin(table.set_index(RUN_KEY).index)]
        table = pd.concat([old, table], ignore_index=True)
    return table.sort_values(RUN_KEY, ignore_index=True) if len(table) else table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--dataset", default="synthetic_benchmark")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "synthetic_benchmark_runs.csv")
    p.add_argument("--archive", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--figure", type=Path, help="also draw the archived runs' eval Dice curves to this PNG")
    args = p.parse_args()
    pattern = f"{args.dataset}/runs/*p/*/seed*"
    runs = sorted(args.results.glob(pattern))
    benchmarks = args.results / "benchmarks" / args.dataset
    # a run still training (no model.pt yet) would show a partial curve and a wrong gain
    unfinished = [run for run in runs if not (run / "model.pt").is_file()]
    for run in unfinished:
        print(f"skipping {run}: no model.pt, the run has not finished")
    runs = [run for run in runs if run not in unfinished]
    rows = []
    for run in runs:
        provenance = run_provenance(run)
        rows.append(summarise_run(run, benchmarks, provenance))
        archive_run(run, args.results, args.archive, provenance)
    table = merge_rows(args.out, rows)
    args.out.write_text(table.to_csv(index=False))
    print(table.to_string(index=False))
    if args.figure:
        archived = [run for run in sorted(args.archive.glob(pattern)) if (run / "validation.csv").is_file()]
        learning_curves_figure(archived, args.figure)


if __name__ == "__main__":
    main()
