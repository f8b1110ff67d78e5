"""``micd``: the command line every Snakemake rule calls, one subcommand per stage.

Rules pass every path and setting; nothing here knows the workflow's file layout beyond the
formats each stage reads and writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def cmd_synthesise(args: argparse.Namespace) -> None:
    from micd.data.synthetic import generate_archive

    generate_archive(args.out, n_train=args.n_train, n_validation=args.n_validation, seed=args.seed, **args.options)


def cmd_convert(args: argparse.Namespace) -> None:
    from micd.data.convert import convert_amos

    convert_amos(args.archive, args.out, modality=args.modality)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from micd.data.classes import classes_for
    from micd.data.preprocess import preprocess

    preprocess(
        args.manifest,
        args.out,
        grid=tuple(args.grid),
        hu_window=tuple(args.hu_window),
        num_classes=len(classes_for(args.family)),
    )


def cmd_split(args: argparse.Namespace) -> None:
    import pandas as pd

    from micd.data.splits import make_splits, validate_splits, write_splits

    cases = pd.read_csv(args.cases)
    train = cases.loc[cases["subset"] == "train", "case_id"].tolist()
    test = cases.loc[cases["subset"] == "validation", "case_id"].tolist()
    splits = make_splits(train, test, args.ratios, seed=args.seed, eval_fraction=args.eval_fraction)
    write_splits(splits, args.out)
    # judged like any published split file before anything trains on it
    validate_splits(args.out, args.ratios, known_ids=set(cases["case_id"]))


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.engine import TrainData, Trainer, TrainSettings
    from micd.methods import METHODS

    torch.set_num_threads(args.threads)
    method_cls = METHODS.get(args.method)
    if method_cls is None:
        sys.exit(f"error: unknown method {args.method!r}; registered: {sorted(METHODS)}")
    if method_cls.labelled_set == "train":
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
    from micd.evaluation.predict import predict_cases

    torch.set_num_threads(args.threads)
    predict_cases(args.model, args.data_dir, read_case_list(args.cases), args.out, device=args.device)


def cmd_metrics(args: argparse.Namespace) -> None:
    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.evaluation.score import score_run

    run = {"dataset": args.dataset, "ratio": args.ratio, "method": args.method, "seed": args.seed}
    score_run(args.predictions, args.data_dir, read_case_list(args.cases), classes_for(args.family), run, args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from micd.report.build import build_report

    build_report(
        args.metrics, args.family, args.methods, args.table_md, args.table_csv, args.figure, caption=args.caption
    )


def cmd_sensitivity(args: argparse.Namespace) -> None:
    import pandas as pd

    from micd.report.figures import plot_mask_sensitivity

    per_case = pd.concat([pd.read_csv(path) for path in args.metrics], ignore_index=True)
    plot_mask_sensitivity(per_case, args.grid, args.table_csv, args.figure)


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

    s = sub.add_parser("convert", help="validate an AMOS-layout archive into the canonical layout")
    s.add_argument("--archive", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--modality", choices=["all", "ct"], default="all")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("preprocess", help="HU window, normalise and resize every case once")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--grid", type=int, nargs=3, required=True, metavar=("D", "H", "W"))
    s.add_argument("--hu-window", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"))
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("split", help="seeded train/eval/test and labelled/unlabelled lists")
    s.add_argument("--cases", type=Path, required=True, help="cases.csv of the preprocessed set")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--ratios", type=int, nargs="+", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--eval-fraction", type=float, required=True)
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
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("report", help="results table and figure of one data set")
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--methods", nargs="+", required=True, help="row order")
    s.add_argument("--table-md", type=Path, required=True)
    s.add_argument("--table-csv", type=Path, required=True)
    s.add_argument("--figure", type=Path, required=True)
    s.add_argument("--caption", default="")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("sensitivity", help="MICD's mask-sensitivity table and heat map")
    s.add_argument("--metrics", type=Path, nargs="+", required=True)
    s.add_argument("--grid", type=_json, required=True, help="JSON: variant -> {mask_ratio, mask_block}")
    s.add_argument("--table-csv", type=Path, required=True)
    s.add_argument("--figure", type=Path, required=True)
    s.set_defaults(func=cmd_sensitivity)
    return p


def main(argv: list[str] | None = None) -> None:
    from micd.data.errors import DataError
    from micd.errors import SettingsError

    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, SettingsError, FileNotFoundError) as exc:
        sys.exit(f"micd {args.command}: error: {exc}")


if __name__ == "__main__":
    main()
