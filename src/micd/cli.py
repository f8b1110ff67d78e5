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


def _number(kind: type, least: float, *, above: bool = False, most: float | None = None):
    """An argparse type: a ``kind`` (int or float) from ``least`` (excluded if ``above``) to ``most``;
    anything else is a usage error naming the option (``micd train --threads 0``, ``--seed x``)."""
    words = "an integer" if kind is int else "a number"
    bounds = f"{'above' if above else 'at least'} {least:g}" + (f" and at most {most:g}" if most is not None else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words} {bounds}, got {text!r}") from None
        if value != value or value < least or (above and value == least) or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"expected {words} {bounds}, got {text}")
        return value

    return parse


def _train_settings(text: str) -> dict:
    """``--train-settings``: a JSON object whose keys are train settings of the right type and bounds."""
    from micd.settings import train_setting_problems

    values = _json(text)
    problems = train_setting_problems(values)
    if problems:
        raise argparse.ArgumentTypeError("; ".join(f"{key}: {problem}" for key, problem in problems.items()))
    return values


def _figure_path(text: str) -> Path:
    from micd.report.figures import FORMATS  # matplotlib: only where a figure is drawn

    path = Path(text)
    if path.suffix.lstrip(".").lower() not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text}: a figure file ends in one of {', '.join('.' + f for f in FORMATS)}, which names its format"
        )
    return path


def _json_file(text: str) -> dict:
    try:
        content = Path(text).read_text()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from None
    return _json_of(dict, content)


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

    from micd.data.splits import assemble_splits, check_split_lists, write_origins, write_splits
    from micd.errors import DataError

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
    write_origins(origins, args.out)
    for row in origins:
        print(f"{row['file']}: {row['origin']}")


def take_device_slot(args: argparse.Namespace) -> None:
    """A GPU of the job's own on a workstation (micd.devices), before anything initialises CUDA."""
    from micd.devices import DeviceBusyError, claim_device, parse_devices

    try:
        claim_device(parse_devices(args.device_slots), args.device_lock_dir, args.device_wait)
    except (DeviceBusyError, ValueError) as exc:
        sys.exit(f"error: {exc}")


def cmd_train(args: argparse.Namespace) -> None:
    take_device_slot(args)
    import torch

    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.data.preprocess import check_num_classes, check_patch_fits
    from micd.data.splits import split_origin
    from micd.errors import DataError
    from micd.methods import METHODS
    from micd.methods.base import settings_from_dict
    from micd.names import nearest
    from micd.settings import TrainSettings
    from micd.training.loop import TrainData, Trainer
    from micd.training.memory import out_of_memory_message
    from micd.training.runs import training_cases

    torch.set_num_threads(args.threads)
    if args.method not in METHODS:
        close = nearest(args.method, METHODS)
        hint = f"; did you mean {close!r}?" if close else ""
        sys.exit(f"micd train: error: unknown method {args.method!r}{hint} (registered: {', '.join(sorted(METHODS))})")
    settings_from_dict(METHODS[args.method].Settings, args.method_settings, args.method)  # a typo: before any data
    lists = (read_case_list(path, args.data_dir) for path in (args.train, args.labelled, args.unlabelled))
    labelled, unlabelled = training_cases(args.method, *lists)
    if not labelled:
        raise DataError(f"file {args.labelled}: expected at least one labelled case id, found none")
    data = TrainData(
        data_dir=args.data_dir,
        labelled=labelled,
        unlabelled=unlabelled,
        eval=read_case_list(args.eval, args.data_dir),
        num_classes=len(classes_for(args.family)),
    )
    run_info = {
        "dataset": args.dataset,
        "family": args.family,  # its class names, for micd segment's volume table
        "ratio": args.ratio,
        "variant": args.variant or args.method,
        "labelled_cases": labelled,
        "labelled_split_origin": split_origin(args.labelled),
    }
    train_settings = TrainSettings.from_dict(args.train_settings)
    # before the first epoch: a wrong --family or a patch the data cannot hold would fail later
    check_num_classes(args.data_dir, data.num_classes, f"--family {args.family}")
    crops_eval = train_settings.validation == "centre_crop"
    check_patch_fits(args.data_dir, labelled + unlabelled, data.eval, train_settings.patch_size, crops_eval)
    trainer = Trainer(
        args.method,
        args.method_settings,
        train_settings,
        data,
        args.out_dir,
        seed=args.seed,
        run_info=run_info,
    )
    try:
        finished = trainer.fit()
    except torch.cuda.OutOfMemoryError:
        # the last checkpoint is whole and the declared outputs unwritten: the job can be rerun
        sys.exit(out_of_memory_message(trainer))
    if not finished:
        # stopped by SIGTERM after a checkpoint: a non-zero exit lets the scheduler requeue the
        # job, and the next run resumes from the checkpoint
        sys.exit(143)


def cmd_infer(args: argparse.Namespace) -> None:
    take_device_slot(args)
    import torch

    from micd.data.io import read_case_list
    from micd.inference.infer import InferenceSettings, predict_cases

    torch.set_num_threads(args.threads)
    settings = InferenceSettings(batch_size=args.batch_size, blending=args.blending, original_grid=args.original_grid)
    cases = read_case_list(args.cases, args.data_dir)
    predict_cases(args.model, args.data_dir, cases, args.out, settings, device=args.device)


def cmd_segment(args: argparse.Namespace) -> None:
    import torch

    from micd.inference.own_scans import segment_with_model

    torch.set_num_threads(args.threads)
    segment_with_model(args.model, args.images, args.out, args.batch_size, args.blending, args.device)


def cmd_metrics(args: argparse.Namespace) -> None:
    from micd.data.classes import classes_for
    from micd.data.io import read_case_list
    from micd.evaluation.metrics import score_run

    run = {"dataset": args.dataset, "ratio": args.ratio, "method": args.method, "seed": args.seed}
    score_run(
        args.predictions,
        args.data_dir,
        read_case_list(args.cases, args.data_dir),
        classes_for(args.family),
        run,
        args.out,
        both_empty_dice=args.both_empty_dice,
        empty_asd=args.empty_asd,
    )


def cmd_tables(args: argparse.Namespace) -> None:
    from micd.report.build import build_tables
    from micd.report.table_formats import TablePaths

    main = (args.table_md, args.table_tex, args.table_html, args.table_csv)
    paths = TablePaths(*main, args.organs_md, args.organs_tex, args.organs_html)
    build_tables(
        args.metrics,
        args.family,
        args.methods,
        paths,
        args.config,
        published_csvs=args.published,
        main_published_methods=args.published_main,
        subject=args.subject,
        note=args.note,
    )


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


def add_device_slot_options(s: argparse.ArgumentParser) -> None:
    """The job's device slot on a workstation with several GPUs (micd.devices, docs/cluster.md).
    Each default comes from the environment the workflow sets (micd.devices.SLOT_ENVIRONMENT)."""
    import os

    from micd.devices import DEFAULT_LOCK_DIR, SLOT_ENVIRONMENT

    env = {option: os.environ.get(name) for option, name in SLOT_ENVIRONMENT.items()}
    s.add_argument(
        "--device-slots",
        default=env["devices"] or "none",
        help="GPUs this job may take one of, locked for its lifetime: auto (every GPU CUDA sees), none "
        "(take no slot) or comma-separated ids in nvidia-smi's order, e.g. 0,2,3 "
        f"(default: ${SLOT_ENVIRONMENT['devices']}, else none)",
    )
    s.add_argument(
        "--device-wait",
        type=_number(float, 0),
        default=float(env["wait_minutes"] or 10.0),
        help="minutes to wait for a free slot before failing, e.g. 10; 0: fail at once "
        f"(default: ${SLOT_ENVIRONMENT['wait_minutes']}, else 10)",
    )
    s.add_argument(
        "--device-lock-dir",
        type=Path,
        default=Path(env["lock_dir"] or DEFAULT_LOCK_DIR),
        help="folder of the per-GPU lock files, shared by every job of the machine "
        f"(default: ${SLOT_ENVIRONMENT['lock_dir']}, else {DEFAULT_LOCK_DIR})",
    )


# Subcommands renamed, by their old names: for one release an old name still runs the new one, and
# says so on stderr (`micd report` wrote only tables).
RENAMED = {"report": "tables"}
TABLES_HELP = "results or ablation tables of a data set, main and per organ: md, LaTeX, HTML, CSV"
FAMILY_HELP = "data-set family, which names the organ classes: amos, synapse or synthetic"
CASE_LIST_HELP = "path to a text file of case ids, one per line"
SETTINGS_HELP = "JSON object of {} settings (config/schema.yaml: {}); unset keys take their defaults"
METRICS_HELP = "paths of metrics.csv files (micd metrics), one per run"


def _report_parser(sub: argparse._SubParsersAction, name: str, help: str, func) -> argparse.ArgumentParser:
    """A report subcommand: each writes a ``{file}.provenance.json`` beside every file it writes.
    An old name (RENAMED) says so in its help and runs the new one."""
    if name in RENAMED:
        help = f"old name of `micd {RENAMED[name]}`, which it runs; it goes in the next release"
        s = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    else:
        s = sub.add_parser(name, help=help)
    s.add_argument(
        "--config",
        type=_json_file,
        default={},
        help="path to a JSON file of the workflow settings to record in the provenance sidecars "
        "(the workflow's results/<dataset>/report_config.json; default: none recorded)",
    )
    s.set_defaults(func=func)
    return s


def _tables_options(s: argparse.ArgumentParser) -> None:
    """The options of ``micd tables`` (and of its old name, ``micd report``)."""
    s.add_argument("--metrics", type=Path, nargs="+", required=True, help=METRICS_HELP)
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    s.add_argument("--methods", nargs="+", required=True, help="method names, in row order")
    for fmt, kind in (("md", "Markdown"), ("tex", "LaTeX"), ("html", "HTML"), ("csv", "CSV")):
        s.add_argument(f"--table-{fmt}", type=Path, required=True, help=f"path of the main {kind} table to write")
    for fmt, kind in (("md", "Markdown"), ("tex", "LaTeX"), ("html", "HTML")):
        s.add_argument(f"--organs-{fmt}", type=Path, required=True, help=f"path of the per-organ {kind} table to write")
    s.add_argument(
        "--published",
        type=Path,
        nargs="+",
        default=[],
        help="published results (long CSVs, config/published/) to show beside ours; the first file's rows marked †",
    )
    s.add_argument(
        "--published-main",
        nargs="*",
        metavar="METHOD",
        help="methods whose published rows the main table shows (default: every published row; "
        "the per-organ table always shows all)",
    )
    s.add_argument("--subject", default="", help="what the table is where not the main results, e.g. ablation")
    s.add_argument("--note", default="", help="last sentence of the captions, e.g. where the splits come from")


def _figure_argument(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--figure",
        type=_figure_path,
        nargs="+",
        required=True,
        help="paths of the figure to write, one per format, named by the extension: .png (300 dpi), .pdf or .svg",
    )


class _VersionAction(argparse.Action):
    """``micd --version``: the version and the commit (micd.version), looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from micd.version import version_text

        print(f"{parser.prog} {version_text()}")
        parser.exit()


class _MethodListFormatter(argparse.HelpFormatter):
    """Help that names the registered methods where it says {methods}: micd.methods loads PyTorch,
    so it is imported only when the help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{methods}" in text:
            from micd.methods import METHODS

            text = text.replace("{methods}", ", ".join(sorted(METHODS)))
        return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="micd", description=__doc__.splitlines()[0])
    p.add_argument("--version", action=_VersionAction, help="show the version and the git commit, then exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthesise", help="generate the synthetic multi-organ CT archive (AMOS layout)")
    s.add_argument("--out", type=Path, required=True, help="folder to write the archive to (imagesTr/, imagesVa/, ...)")
    s.add_argument("--n-train", type=_number(int, 2), required=True, help="number of training cases (imagesTr/)")
    s.add_argument(
        "--n-validation",
        type=_number(int, 0),
        required=True,
        help="number of validation cases (imagesVa/, the test set)",
    )
    s.add_argument(
        "--seed", type=_number(int, 0), required=True, help="integer seed; the same arguments give the same files"
    )
    s.add_argument(
        "--options",
        type=_json,
        default={},
        help='JSON object of size options, e.g. {"inplane": [40, 48], "slices": [18, 24]} '
        "(config/schema.yaml: datasets.<name>.synthetic.options)",
    )
    s.set_defaults(func=cmd_synthesise)

    s = sub.add_parser("fetch-zenodo", help="download a file of a Zenodo record (resumable, md5 checked)")
    s.add_argument("--api-url", required=True, help="the record's API URL, https://zenodo.org/api/records/<id>")
    s.add_argument("--file", required=True, help="file name in the record, e.g. amos22.zip")
    s.add_argument("--md5", help="expected md5 as hex (checked against the record's)")
    s.add_argument("--out", type=Path, required=True, help="path of the file to write (a partial <out>.part resumes)")
    s.add_argument(
        "--dataset", required=True, help="data set name, as in the config's datasets, for the licence message"
    )
    s.add_argument("--licence", required=True, help="the licence's name, e.g. 'CC BY 4.0', for the licence message")
    s.add_argument("--licence-accepted", action="store_true", help="the licence was read and accepted; else stop")
    s.add_argument(
        "--retries", type=_number(int, 0), default=5, help="attempts after a dropped connection or timeout (default: 5)"
    )
    s.set_defaults(func=cmd_fetch_zenodo)

    s = sub.add_parser("fetch-synapse", help="Synapse's RawData.zip: a placed copy or a download with a token")
    s.add_argument("--entity", required=True, help="Synapse id of the archive, e.g. syn3379050")
    s.add_argument("--md5", required=True, help="expected md5 of the archive, as hex")
    s.add_argument("--placed", type=Path, help="where the user may have placed the archive")
    s.add_argument(
        "--token-env",
        default="SYNAPSE_AUTH_TOKEN",
        help="name of the environment variable holding the personal access token (default: SYNAPSE_AUTH_TOKEN)",
    )
    s.add_argument("--out", type=Path, required=True, help="path of the archive to write")
    s.set_defaults(func=cmd_fetch_synapse)

    s = sub.add_parser("fetch-splits", help="download published split files, each sha256 checked")
    s.add_argument("--base-url", required=True, help="URL of the folder holding the files: each is <base-url>/<name>")
    s.add_argument(
        "--sha256",
        type=_json,
        required=True,
        help='JSON object of file name to sha256 hex, e.g. {"train.txt": "ab12..."}',
    )
    s.add_argument("--out", type=Path, required=True, help="folder to write the files and their sources.csv to")
    s.add_argument(
        "--retries", type=_number(int, 0), default=5, help="attempts per file after a dropped connection (default: 5)"
    )
    s.set_defaults(func=cmd_fetch_splits)

    s = sub.add_parser("extract", help="extract a zip archive safely (no escaping paths, no macOS junk)")
    s.add_argument("--archive", type=Path, required=True, help="path of the zip file")
    s.add_argument("--out", type=Path, required=True, help="folder to extract into (appears complete or not at all)")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("convert", help="validate an extracted archive into the canonical layout")
    s.add_argument("--archive", type=Path, required=True, help="folder of the extracted archive")
    s.add_argument(
        "--out", type=Path, required=True, help="folder of the canonical layout to write (manifest.csv, ...)"
    )
    s.add_argument(
        "--layout",
        choices=["amos", "synapse"],
        default="amos",
        help="the archive's file layout: amos (dataset.json, imagesTr/, ...) or synapse (Training/img/, ...)",
    )
    s.add_argument("--modality", choices=["all", "ct"], default="all", help="ct: only AMOS's CT cases (ids up to 500)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("preprocess", help="HU window, normalise and resample every case once")
    s.add_argument("--manifest", type=Path, required=True, help="manifest.csv of the converted data set (micd convert)")
    s.add_argument("--out", type=Path, required=True, help="folder to write the preprocessed arrays and cases.csv to")
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    s.add_argument(
        "--mode",
        choices=["grid", "half_inplane", "spacing"],
        default="grid",
        help="resize to --grid, halve the in-plane size, or resample to --spacing (default: grid)",
    )
    s.add_argument("--grid", type=_number(int, 1), nargs=3, metavar=("D", "H", "W"), help="mode grid: the fixed grid")
    s.add_argument(
        "--spacing",
        type=_number(float, 0, above=True),
        nargs=3,
        metavar=("D", "H", "W"),
        help="mode spacing: voxel size, mm",
    )
    s.add_argument(
        "--hu-window", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"), help="HU window, e.g. -75 275"
    )
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("split", help="published or seeded train/eval/test and labelled/unlabelled lists, validated")
    s.add_argument("--cases", type=Path, required=True, help="cases.csv of the preprocessed set")
    s.add_argument("--out", type=Path, required=True, help="folder to write the case lists (.txt) and origin.csv to")
    s.add_argument(
        "--ratios", type=_number(int, 1, most=100), nargs="+", required=True, help="labelled ratios in %%, e.g. 5 10"
    )
    s.add_argument("--seed", type=_number(int, 0), required=True, help="integer seed of the generated lists")
    s.add_argument(
        "--eval-fraction",
        type=_number(float, 0, above=True, most=1),
        required=True,
        help="fraction (0 to 1) of the training cases kept for validation",
    )
    s.add_argument(
        "--test-fraction",
        type=_number(float, 0, above=True, most=1),
        default=0.2,
        help="fraction of the cases tested when the data has no test subset",
    )
    s.add_argument("--published", type=Path, help="folder of published split files (DHC's names)")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser(
        "train", help="train one method on one split with one seed", formatter_class=_MethodListFormatter
    )
    train_paths = {
        "data-dir": "folder of the preprocessed data set (micd preprocess)",
        "train": f"{CASE_LIST_HELP}: every training case (read by the methods that ignore the split)",
        "labelled": f"{CASE_LIST_HELP}: the labelled training cases",
        "unlabelled": f"{CASE_LIST_HELP}: the unlabelled training cases",
        "eval": f"{CASE_LIST_HELP}: the validation cases",
        "out-dir": "the run's folder: model.pt, train_log.jsonl, validation.csv and state/ are written there",
    }
    for name, text in train_paths.items():
        s.add_argument(f"--{name}", type=Path, required=True, help=text)
    s.add_argument("--method", required=True, help="registered method (docs/methods.md): {methods}")
    s.add_argument("--variant", help="name of this configuration of the method (default: the method)")
    s.add_argument(
        "--method-settings",
        type=_json,
        default={},
        help=SETTINGS_HELP.format("the method's", "method_settings; docs/methods.md") + ', e.g. {"mask_block": 8}',
    )
    s.add_argument(
        "--train-settings",
        type=_train_settings,
        default={},
        help=SETTINGS_HELP.format("training", "train") + ', e.g. {"max_epochs": 8, "lr": 0.01}',
    )
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    s.add_argument("--dataset", required=True, help="data set name, recorded in the model's provenance")
    s.add_argument(
        "--ratio",
        type=_number(int, 1, most=100),
        required=True,
        help="labelled ratio in %%, recorded in the provenance",
    )
    s.add_argument("--seed", type=_number(int, 0), required=True, help="integer seed of the model and the data streams")
    s.add_argument("--threads", type=_number(int, 1), default=1, help="PyTorch CPU threads (default: 1)")
    add_device_slot_options(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("infer", help="sliding-window predictions of a trained model")
    s.add_argument("--model", type=Path, required=True, help="model.pt of a finished run (micd train)")
    s.add_argument("--data-dir", type=Path, required=True, help="folder of the preprocessed data set")
    s.add_argument("--cases", type=Path, required=True, help=f"{CASE_LIST_HELP}: the cases to segment")
    s.add_argument("--out", type=Path, required=True, help="folder to write <case_id>.nii.gz label maps to")
    s.add_argument("--blending", default="average", help="overlapping windows: average (the protocol), hann or crop")
    s.add_argument("--batch-size", type=_number(int, 1), default=2, help="windows per forward pass")
    s.add_argument(
        "--original-grid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write predictions on the source file's grid (predictions/original/)",
    )
    s.add_argument("--device", default="auto", help="a PyTorch device, e.g. cpu or cuda:0; auto: a GPU if there is one")
    s.add_argument("--threads", type=_number(int, 1), default=1, help="PyTorch CPU threads (default: 1)")
    add_device_slot_options(s)
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser(
        "segment",
        help="segment one's own CT scans with a trained run (label maps on each scan's grid, organ volumes)",
    )
    s.add_argument("images", type=Path, nargs="+", help="CT images in HU (.nii.gz or .nii), or folders of them")
    s.add_argument("--model", type=Path, required=True, help="path: a run's model.pt, as `micd train` writes it")
    s.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder (new, empty or an earlier output): {scan}.nii.gz, volumes.csv, segment.json",
    )
    s.add_argument("--blending", default="average", help="word: how overlapping windows blend: average, hann or crop")
    s.add_argument(
        "--batch-size", type=_number(int, 1), default=2, help="integer: windows per forward pass (default 2)"
    )
    s.add_argument("--device", default="auto", help="word: auto (a GPU if there is one), cpu, cuda or cuda:N")
    s.add_argument("--threads", type=_number(int, 1), default=1, help="integer: CPU threads for PyTorch (default 1)")
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("metrics", help="per-case, per-class Dice and ASD of one run's predictions")
    s.add_argument("--predictions", type=Path, required=True, help="folder of the run's label maps (micd infer)")
    s.add_argument("--data-dir", type=Path, required=True, help="folder of the preprocessed data set (the truth)")
    s.add_argument("--cases", type=Path, required=True, help=f"{CASE_LIST_HELP}: the test cases to score")
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    for name, text in (("dataset", "data set name"), ("method", "method or variant name")):
        s.add_argument(f"--{name}", required=True, help=f"{text}, written in each row")
    s.add_argument(
        "--ratio", type=_number(int, 1, most=100), required=True, help="labelled ratio in %%, written in each row"
    )
    s.add_argument("--seed", type=_number(int, 0), required=True, help="the run's seed, written in each row")
    s.add_argument(
        "--both-empty-dice",
        type=_number(float, 0, most=100),
        default=100.0,
        help="Dice (%%) of a class absent from both",
    )
    s.add_argument("--empty-asd", type=_number(float, 0), default=128.0, help="ASD (voxels) of a class absent from one")
    s.add_argument("--out", type=Path, required=True, help="path of the metrics.csv to write")
    s.set_defaults(func=cmd_metrics)

    for name in ("tables", "report"):  # report: its old name (RENAMED)
        _tables_options(_report_parser(sub, name, TABLES_HELP, cmd_tables))

    s = _report_parser(sub, "dice-per-class", "figure: Dice per organ class, methods side by side", cmd_dice_per_class)
    s.add_argument("--metrics", type=Path, nargs="+", required=True, help=METRICS_HELP)
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    s.add_argument("--methods", nargs="+", required=True, help="method names, in legend order")
    _figure_argument(s)

    s = _report_parser(sub, "dice-vs-ratio", "figure: mean Dice against the labelled ratio", cmd_dice_vs_ratio)
    s.add_argument("--metrics", type=Path, nargs="+", required=True, help=METRICS_HELP)
    s.add_argument("--methods", nargs="+", required=True, help="method names, in legend order")
    _figure_argument(s)

    runs_help = "JSON list of runs: dataset, ratio, method, seed and the paths of their files"
    s = _report_parser(sub, "training-curves", "figure: loss terms and validation Dice per method", cmd_training_curves)
    s.add_argument("--runs", type=_json_list, required=True, help=f"{runs_help} (train_log, validation)")
    s.add_argument("--methods", nargs="+", required=True, help="method names, in row order")
    _figure_argument(s)

    s = _report_parser(sub, "qualitative", "figure: one axial slice segmented by each method", cmd_qualitative)
    s.add_argument("--runs", type=_json_list, required=True, help=f"{runs_help} (predictions)")
    s.add_argument("--data-dir", type=Path, required=True, help="the preprocessed data set")
    s.add_argument("--cases", type=Path, required=True, help=f"{CASE_LIST_HELP}: the test cases")
    s.add_argument("--case", help="test case to show (default: the first by id)")
    s.add_argument("--family", required=True, help=FAMILY_HELP)
    _figure_argument(s)

    s = _report_parser(sub, "sensitivity", "MICD's mask-sensitivity table and heat map", cmd_sensitivity)
    s.add_argument("--metrics", type=Path, nargs="+", required=True, help=METRICS_HELP)
    s.add_argument(
        "--grid",
        type=_json,
        required=True,
        help='JSON object of variant name to its mask, e.g. {"micd_r0.5_b16": {"mask_ratio": 0.5, "mask_block": 16}}',
    )
    s.add_argument("--table-csv", type=Path, required=True, help="path of the CSV table to write")
    _figure_argument(s)
    return p


def main(argv: list[str] | None = None) -> None:
    from micd.errors import DataError, DiskFullError, RunInUseError, SettingsError

    words = sys.argv[1:] if argv is None else argv
    command = next((word for word in words if not word.startswith("-")), None)
    if command in RENAMED:  # before parsing, so that a usage error or --help says it too
        print(f"micd {command} is now micd {RENAMED[command]}; the old name goes in the next release", file=sys.stderr)
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, SettingsError, RunInUseError, DiskFullError, FileNotFoundError) as exc:
        sys.exit(f"micd {args.command}: error: {exc}")


if __name__ == "__main__":
    main()
