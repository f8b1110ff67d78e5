"""``micd``: the command line every Snakemake rule calls, one subcommand per stage.

Rules pass every path and setting; nothing here knows the workflow's file layout beyond the
formats each stage reads and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _json_of(kind: type, text: str) -> dict | list:
    name = {dict: "a JSON object", list: "a JSON list"}[kind]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}: {exc}") from None
    if not isinstance(value, kind):
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
    return value


def _json(text: str) -> dict:
    return _json_of(dict, text)


def _json_list(text: str) -> list:
    return _json_of(list, text)


def cmd_synthesise(args: argparse.Namespace) -> None:
    from micd.data.synthetic import generate_archive

    generate_archive(args.out, n_train=args.n_train, n_validation=args.n_validation, seed=args.seed, **args.options)


def cmd_fetch_zenodo(args: argparse.Namespace) -> None:
    from micd.data.acquire import download, require_licence, zenodo_file

    require_licence(args.licence_accepted, args.dataset, args.licence)
    url, md5 = zenodo_file(args.api_url, args.file)
    if args.md5 and args.md5.lower() != md5.lower():
        sys.exit(f"micd fetch-zenodo: error: the config pins md5 {args.md5} but Zenodo lists {md5} for {args.file}")
    download(url, args.out, ("md5", md5), retries=args.retries)


def cmd_fetch_synapse(args: argparse.Namespace) -> None:
    from micd.data.acquire import fetch_synapse

    fetch_synapse(args.out, args.entity, args.md5, placed=args.placed, token_env=args.token_env)


def cmd_fetch_splits(args: argparse.Namespace) -> None:
    from micd.data.acquire import fetch_files

    fetch_files(args.base_url, args.sha256, args.out, retries=args.retries)


def cmd_extract(args: argparse.Namespace) -> None:
    from micd.data.acquire import extract_zip

    extract_zip(args.archive, args.out)


def cmd_convert(args: argparse.Namespace) -> None:
    from micd.data.convert import convert_archive

    convert_archive(args.archive, args.out, layout=args.layout, modality=args.modality)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from micd.data.classes import classes_for
    from micd.data.preprocess import preprocess

    preprocess(
        args.manifest,
        args.out,
        grid=args.grid,
        hu_window=tuple(args.hu_window),
        num_classes=len(classes_for(args.family)),
        mode=args.mode,
        spacing=args.spacing,
    )


def cmd_split(args: argparse.Namespace) -> None:
    import pandas as pd

    from micd.data.errors import DataError
    from micd.data.io import write_csv
    from micd.data.splits import ORIGIN_COLUMNS, assemble_splits, check_split_lists, write_splits

    cases = pd.read_csv(args.cases, dtype={"case_id": str})
    train = cases.loc[cases["subset"] == "train", "case_id"].tolist()
    test = cases.loc[cases["subset"] == "validation", "case_id"].tolist()
    splits, origins = assemble_splits(
        train, test, args.ratios, args.seed, args.eval_fraction, args.test_fraction, args.published
    )
    # published and generated lists alike are judged before anything is written or trained on
    try:
        check_split_lists(splits, args.ratios, set(cases["case_id"]), f"the split lists for {args.out}")
    except DataError as exc:
        where = "\n  ".join(f"{row['file']}: {row['origin']}" for row in origins)
        raise DataError(f"{exc}\nwhere the lists came from:\n  {where}") from None
    write_splits(splits, args.out)
    write_csv(args.out / "origin.csv", ORIGIN_COLUMNS, origins)
    for row in origins:
        print(f"{row['file']}: {row['origin']}")


def split_origin(split_file: Path) -> str:
    """Where a split list came from (published or generated), as the split stage recorded it."""
    origin_csv = split_file.parent / "origin.csv"
    if origin_csv.is_file():
        import csv

        with open(origin_csv, newline="") as f:
            for row in csv.DictReader(f):
                if row["file"] == split_file.name:
                    return row["origin"]
    return "unknown (no origin.csv beside the split file)"


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.engine import TrainData, Trainer, TrainSettings
    from micd.methods import METHODS, trains_on_every_case

    torch.set_num_threads(args.threads)
    if args.method not in METHODS:
        sys.exit(f"error: unknown method {args.method!r}; registered: {sorted(METHODS)}")
    if trains_on_every_case(args.method):
        labelled, unlabelled = read_case_list(args.train), []
    else:
        labelled, unlabelled = read_case_list(args.labelled), read_case_list(args.unlabelled)
    data = TrainData(
        data_dir=args.data_dir,
        labelled=labelled,
        unlabelled=unlabelled,
        eval=read_case_list(args.eval),
        num_classes=len(classes_for(args.family)),
    )
    run_info = {
        "dataset": args.dataset,
        "ratio": args.ratio,
        "variant": args.variant or args.method,
        "labelled_cases": labelled,
        "labelled_split_origin": split_origin(args.labelled),
    }
    trainer = Trainer(
        args.method,
        args.method_settings,
        TrainSettings.from_dict(args.train_settings),
        data,
        args.out_dir,
        seed=args.seed,
        run_info=run_info,
    )
    if not trainer.fit():
        # stopped by SIGTERM after a checkpoint: a non-zero exit lets the scheduler requeue the
        # job, and the next run resumes from the checkpoint
        sys.exit(143)


def cmd_infer(args: argparse.Namespace) -> None:
    import torch

    from micd.data.io import read_case_list
    from micd.evaluation.predict import InferenceSettings, predict_cases

    torch.set_num_threads(args.threads)
    settings = InferenceSettings(batch_size=args.batch_size, blending=args.blending, original_grid=args.original_grid)
    predict_cases(args.model, args.data_dir, read_case_list(args.cases), args.out, settings, device=args.device)


def cmd_metrics(args: argparse.Namespace) -> None:
    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.evaluation.score import score_run

    run = {"dataset": args.dataset, "ratio": args.ratio, "method": args.method, "seed": args.seed}
    score_run(
        args.predictions,
        args.data_dir,
        read_case_list(args.cases),
        classes_for(args.family),
        run,
        args.out,
        both_empty_dice=args.both_empty_dice,
        empty_asd=args.empty_asd,
    )


def cmd_report(args: argparse.Namespace) -> None:
    from micd.report.build import build_tables
    from micd.report.tables import TablePaths

    paths = TablePaths(args.table_md, args.table_tex, args.table_html, args.table_csv)
    build_tables(args.metrics, args.family, args.methods, paths, args.title, args.config, published_csv=args.published)


def cmd_dice_per_class(args: argparse.Namespace) -> None:
    from micd.report.build import build_dice_per_class

    build_dice_per_class(args.metrics, args.family, args.methods, args.figure, args.config)


def cmd_dice_vs_ratio(args: argparse.Namespace) -> None:
    from micd.report.build import build_dice_vs_ratio

    build_dice_vs_ratio(args.metrics, args.methods, args.figure, args.config)


def cmd_training_curves(args: argparse.Namespace) -> None:
    from micd.report.build import build_training_curves

    build_training_curves(args.runs, args.methods, args.figure, args.config)


def cmd_qualitative(args: argparse.Namespace) -> None:
    from micd.report.build import build_qualitative

    build_qualitative(args.runs, args.data_dir, args.cases, args.family, args.figure, args.config, case_id=args.case)


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from micd.report.build import build_mask_sensitivity

    build_mask_sensitivity(args.metrics, args.grid, args.table_csv, args.figure, args.config)


def _report_parser(sub: argparse._SubParsersAction, name: str, help: str, func) -> argparse.ArgumentParser:
    """A report subcommand: each writes a ``{file}.provenance.json`` beside every file it writes."""
    s = sub.add_parser(name, help=help)
    s.add_argument("--config", type=_json, default={}, help="JSON: workflow settings for the provenance sidecars")
    s.set_defaults(func=func)
    return s


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="micd", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthesise", help="generate the synthetic multi-organ CT archive (AMOS layout)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--n-train", type=int, required=True)
    s.add_argument("--n-validation", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--options", type=_json, default={}, help="JSON of further generator options")
    s.set_defaults(func=cmd_synthesise)

    s = sub.add_parser("fetch-zenodo", help="download a file of a Zenodo record (resumable, md5 checked)")
    s.add_argument("--api-url", required=True, help="https://zenodo.org/api/records/<id>")
    s.add_argument("--file", required=True, help="file name in the record, e.g. amos22.zip")
    s.add_argument("--md5", help="expected md5 (checked against the record's)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--licence", required=True)
    s.add_argument("--licence-accepted", action="store_true")
    s.add_argument("--retries", type=int, default=5)
    s.set_defaults(func=cmd_fetch_zenodo)

    s = sub.add_parser("fetch-synapse", help="Synapse's RawData.zip: a placed copy or a download with a token")
    s.add_argument("--entity", required=True)
    s.add_argument("--md5", required=True)
    s.add_argument("--placed", type=Path, help="where the user may have placed the archive")
    s.add_argument("--token-env", default="SYNAPSE_AUTH_TOKEN", help="environment variable holding the token")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_fetch_synapse)

    s = sub.add_parser("fetch-splits", help="download published split files, each sha256 checked")
    s.add_argument("--base-url", required=True)
    s.add_argument("--sha256", type=_json, required=True, help="JSON: file name -> sha256")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--retries", type=int, default=5)
    s.set_defaults(func=cmd_fetch_splits)

    s = sub.add_parser("extract", help="extract a zip archive safely (no escaping paths, no macOS junk)")
    s.add_argument("--archive", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("convert", help="validate an extracted archive into the canonical layout")
    s.add_argument("--archive", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--layout", choices=["amos", "synapse"], default="amos")
    s.add_argument("--modality", choices=["all", "ct"], default="all")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("preprocess", help="HU window, normalise and resample every case once")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--mode", choices=["grid", "half_inplane", "spacing"], default="grid")
    s.add_argument("--grid", type=int, nargs=3, metavar=("D", "H", "W"), help="mode grid: the fixed grid")
    s.add_argument("--spacing", type=float, nargs=3, metavar=("D", "H", "W"), help="mode spacing: voxel size, mm")
    s.add_argument("--hu-window", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"))
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("split", help="published or seeded train/eval/test and labelled/unlabelled lists, validated")
    s.add_argument("--cases", type=Path, required=True, help="cases.csv of the preprocessed set")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--ratios", type=int, nargs="+", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--eval-fraction", type=float, required=True)
    s.add_argument("--test-fraction", type=float, default=0.2, help="when the data has no test subset")
    s.add_argument("--published", type=Path, help="folder of published split files (DHC's names)")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("train", help="train one method on one split with one seed")
    for name in ("data-dir", "train", "labelled", "unlabelled", "eval", "out-dir"):
        s.add_argument(f"--{name}", type=Path, required=True)
    s.add_argument("--method", required=True, help="registered method name")
    s.add_argument("--variant", help="name of this configuration of the method (default: the method)")
    s.add_argument("--method-settings", type=_json, default={})
    s.add_argument("--train-settings", type=_json, default={})
    s.add_argument("--family", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--ratio", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("infer", help="sliding-window predictions of a trained model")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--data-dir", type=Path, required=True)
    s.add_argument("--cases", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--blending", default="average", help="overlapping windows: average (the protocol), hann or crop")
    s.add_argument("--batch-size", type=int, default=2, help="windows per forward pass")
    s.add_argument(
        "--original-grid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write predictions on the source file's grid (predictions/original/)",
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser("metrics", help="per-case, per-class Dice and ASD of one run's predictions")
    s.add_argument("--predictions", type=Path, required=True)
    s.add_argument("--data-dir", type=Path, required=True)
    s.add_argument("--cases", type=Path, required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--ratio", type=int, required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--both-empty-dice", type=float, default=100.0, help="Dice (%%) of a class absent from both")
    s.add_argument("--empty-asd", type=float, default=128.0, help="ASD (voxels) of a class absent from one")
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_metrics)

    s = _report_parser(sub, "report", "results or ablation table of a data set: md, LaTeX, HTML, CSV", cmd_report)
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--methods", nargs="+", required=True, help="row order")
    for fmt in ("md", "tex", "html", "csv"):
        s.add_argument(f"--table-{fmt}", type=Path, required=True)
    s.add_argument("--published", type=Path, help="published results (long CSV) to show beside ours")
    s.add_argument("--title", default="", help="first sentence of the caption")

    s = _report_parser(sub, "dice-per-class", "figure: Dice per organ class, methods side by side", cmd_dice_per_class)
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--methods", nargs="+", required=True, help="legend order")
    s.add_argument("--figure", type=Path, required=True)

    s = _report_parser(sub, "dice-vs-ratio", "figure: mean Dice against the labelled ratio", cmd_dice_vs_ratio)
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--methods", nargs="+", required=True, help="legend order")
    s.add_argument("--figure", type=Path, required=True)

    runs_help = "JSON list of runs: dataset, ratio, method, seed and the paths of their files"
    s = _report_parser(sub, "training-curves", "figure: loss terms and validation Dice per method", cmd_training_curves)
    s.add_argument("--runs", type=_json_list, required=True, help=f"{runs_help} (train_log, validation)")
    s.add_argument("--methods", nargs="+", required=True, help="row order")
    s.add_argument("--figure", type=Path, required=True)

    s = _report_parser(sub, "qualitative", "figure: one axial slice segmented by each method", cmd_qualitative)
    s.add_argument("--runs", type=_json_list, required=True, help=f"{runs_help} (predictions)")
    s.add_argument("--data-dir", type=Path, required=True, help="the preprocessed data set")
    s.add_argument("--cases", type=Path, required=True, help="the test case list")
    s.add_argument("--case", help="test case to show (default: the first by id)")
    s.add_argument("--family", required=True)
    s.add_argument("--figure", type=Path, required=True)

    s = _report_parser(sub, "sensitivity", "MICD's mask-sensitivity table and heat map", cmd_sensitivity)
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--grid", type=_json, required=True, help="JSON: variant -> {mask_ratio, mask_block}")
    s.add_argument("--table-csv", type=Path, required=True)
    s.add_argument("--figure", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    from micd.data.errors import DataError
    from micd.errors import RunInUseError, SettingsError

    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, SettingsError, RunInUseError, FileNotFoundError) as exc:
        sys.exit(f"micd {args.command}: error: {exc}")


if __name__ == "__main__":
    main()
