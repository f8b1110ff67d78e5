# The paths of the tables and figures of finished runs, and the helpers of their rules
# (rules/report.smk).
import hashlib
import json
import os
import shlex
from types import SimpleNamespace

TABLE = "results/tables/{dataset}_{table}"
# the main table (method, Dice, ASD, p), its CSV holding every number, then the per-organ table
TABLE_FILES = [f"{TABLE}.{ext}" for ext in ("md", "tex", "html", "csv")] + [
    f"{TABLE}_per_organ.{ext}" for ext in ("md", "tex", "html")
]
DICE_PER_CLASS = "results/figures/{dataset}_{table}_dice_per_class.png"
TRAINING_CURVES = "results/figures/{dataset}_{table}_training_curves.png"
DICE_VS_RATIO = "results/figures/{dataset}_dice_vs_ratio.png"
QUALITATIVE = "results/figures/{dataset}_qualitative.png"
SENSITIVITY_TABLE = "results/tables/{dataset}_mask_sensitivity.csv"
SENSITIVITY_FIGURE = "results/figures/{dataset}_mask_sensitivity.png"
REPORT_CONFIG = "results/{dataset}/report_config.json"
# what the old name of the tables target says (rules/report.smk: report)
REPORT_RENAMED = "`snakemake report` is now `snakemake tables`; the old name goes in the next release"


def sidecars(*paths):
    return [f"{path}.provenance.json" for path in paths]


def figure_files(png):
    """The files of the figure ``png`` (a path ending in .png), one per configured format
    (config `figures.formats`), the PNG first."""
    stem = png.removesuffix(".png")
    return [
        png,
        *(f"{stem}.{kind}" for kind in config["figures"]["formats"] if kind != "png"),
    ]


def other_formats(png):
    """The files of the figure ``png`` but the PNG (which the report shows)."""
    return figure_files(png)[1:]


def in_every_format(*pngs):
    return [path for png in pngs for path in figure_files(png)]


def report_setting_leaves(dataset):
    """The settings of a data set's report_config as ``{path: value}``, a list being one value
    (the data set's own settings under ``dataset.``, whatever its name)."""
    settings = json.loads(report_config(SimpleNamespace(dataset=dataset)))
    settings["dataset"] = settings["dataset"][dataset]
    found = {}

    def walk(value, path):
        if isinstance(value, dict) and value:
            for key in sorted(value):
                walk(value[key], f"{path}.{key}" if path else str(key))
        else:
            found[path] = json.dumps(value, sort_keys=True)

    walk(settings, "")
    return found


def report_setting_params():
    """Every setting of report_config as a parameter of its own, ``path=value``: a dry run's
    reason after a change names what changed (``before: train.max_epochs=8 now:
    train.max_epochs=2``), not the whole configuration or a digest of it.
    """
    paths = sorted(
        {path for name in config["datasets"] for path in report_setting_leaves(name)}
    )

    def setting(path):
        return (
            lambda wc: f"{path}={report_setting_leaves(wc.dataset).get(path, '(unset)')}"
        )

    return {f"setting_{i}": setting(path) for i, path in enumerate(paths)}


def report_config(wildcards):
    """The settings behind a data set's tables and figures, for their provenance sidecars."""
    keys = [
        "ratios",
        "methods",
        "seeds",
        "split",
        "preprocess",
        "train",
        "method_settings",
        "variants",
        "ablation",
        "sensitivity",
        "published_results",
        "published_main_methods",
        "qualitative_case",
        "figures",
    ]
    return as_json(
        {"dataset": {wildcards.dataset: dataset_config(wildcards)}}
        | {key: config[key] for key in keys if key in config}
    )


def published_reference(wildcards):
    """The published results files shown beside a results table, in order (none for the
    ablation table); `published_results` is one path or a list of them, a relative path taken
    from the workflow's folder."""
    paths = config["published_results"]
    if wildcards.table != "results" or paths is None:
        return []
    if isinstance(paths, str):
        paths = [paths]
    return [os.path.join(workflow.basedir, path) for path in paths]


def published_args(wildcards):
    """`micd tables`' published files and, where the main table shows only some methods'
    published rows, which (`published_main_methods`)."""
    paths = published_reference(wildcards)
    if not paths:
        return ""
    methods = config.get("published_main_methods")
    selection = (
        ""
        if methods is None
        else " ".join(["--published-main", *map(shlex.quote, methods)])
    )
    return " ".join(["--published", *map(shlex.quote, paths), selection]).strip()


def figure(path, caption, name):
    return report(
        path,
        caption=f"../report/{caption}",
        category="Figures",
        subcategory="{dataset}",
        labels={"data set": "{dataset}", "figure": name},
    )


def table_file(extension, per_organ=False):
    """A file of the main table, or of the per-organ table, as the HTML report shows it."""
    suffix, caption = (
        ("_per_organ", "table_per_organ.rst") if per_organ else ("", "table.rst")
    )
    return report(
        f"{TABLE}{suffix}.{extension}",
        caption=f"../report/{caption}",
        category="Tables",
        subcategory="{dataset}",
        labels={
            "data set": "{dataset}",
            "table": "{table}" + (", per organ" if per_organ else ""),
            "format": extension,
        },
    )


# Each configuration's tables and figures are also kept under a name of its own, so that a run
# of another configuration (other methods, seeds, settings) does not overwrite them; the paths
# above always hold the latest configuration's (rules/report.smk: keep_tables, keep_figure).
KEPT = "results/configs/{dataset}/{tag}/"
FIGURE = "results/figures/{name}.png"


def configuration_tag(dataset):
    """The first 8 hex digits of the SHA-256 of a data set's report settings (report_config): the
    folder under results/configs/{dataset}/ that keeps this configuration's tables and figures.
    """
    settings = report_config(SimpleNamespace(dataset=dataset))
    return hashlib.sha256(settings.encode()).hexdigest()[:8]


def kept(*paths):
    """Where each of ``paths`` (results/...) is kept for its configuration."""
    return [KEPT + path.removeprefix("results/") for path in paths]


def kept_here(paths, **wildcards):
    """The kept copies of ``paths`` for every run data set, under this configuration's tag."""
    return [
        path
        for dataset in run_datasets()
        for path in expand(
            kept(*paths), dataset=dataset, tag=configuration_tag(dataset), **wildcards
        )
    ]


def copy_files(sources, destinations, log):
    """Copy each source to its destination (new files, of the time of copying) and log each copy."""
    import shutil

    lines = []
    for source, destination in zip(sources, destinations):
        shutil.copyfile(source, destination)
        lines.append(f"{source} -> {destination}\n")
    with open(log, "w") as f:
        f.writelines(lines)


def this_configuration(wildcards):
    """An input function of the keep rules: no file, once the requested tag is this configuration's
    (a folder of another configuration is not written from this one's files)."""
    tag = configuration_tag(wildcards.dataset)
    if wildcards.tag != tag:
        raise WorkflowError(
            f"results/configs/{wildcards.dataset}/{wildcards.tag}/ keeps the outputs of another configuration "
            f"than this one ({tag}); run with that configuration to rebuild it"
        )
    return []


def training_runs(wildcards):
    return run_records(
        wildcards.dataset,
        table_rows(wildcards.table),
        config["seeds"],
        train_log=TRAIN_LOG,
        validation=VALIDATION,
    )


def qualitative_runs(wildcards):
    """The first seed's run of every method and ratio: each panel is one model's prediction."""
    return run_records(
        wildcards.dataset,
        config["methods"],
        config["seeds"][:1],
        predictions=PREDICTIONS,
    )


def run_records(dataset, methods, seeds, **files):
    """Each run of ``dataset`` (every ratio, ``methods``, ``seeds``) as its dataset, ratio, method
    and seed, plus the path of each named file of its folder (rules/common.smk: RUN):
    ``metrics=METRICS`` adds ``"metrics": "results/.../metrics.csv"``."""
    return [
        {
            "dataset": dataset,
            "ratio": ratio,
            "method": method,
            "seed": seed,
            **{
                key: run_path(pattern, dataset, ratio, method, seed)
                for key, pattern in files.items()
            },
        }
        for ratio in config["ratios"]
        for method in methods
        for seed in seeds
    ]


def record_paths(records, key):
    return [record[key] for record in records]


def metrics_files(dataset, methods=None):
    runs = run_records(
        dataset, methods or config["methods"], config["seeds"], metrics=METRICS
    )
    return record_paths(runs, "metrics")


def table_rows(table):
    """Methods (or variants) in the rows of a report table: ``results`` or ``ablation``."""
    return {"results": config["methods"], "ablation": config["ablation"]}[table]


def report_targets():
    """The results tables and figures of every run data set (rules/report.smk: tables, figures)."""
    return [*rules.tables.input, *rules.figures.input]


def split_origins(wildcards):
    """Which labelled splits are published and which generated, for table titles."""
    published = (dataset_config(wildcards)["published_splits"] or {}).get("sha256", {})
    seed = config["split"]["seed"]
    origins = [
        f"{ratio} % "
        + (
            "published"
            if {f"labeled_{ratio}p.txt", f"unlabeled_{ratio}p.txt"} <= set(published)
            else f"generated (seed {seed})"
        )
        for ratio in config["ratios"]
    ]
    return "Labelled splits: " + ", ".join(origins) + "."
