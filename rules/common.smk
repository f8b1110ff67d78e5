import atexit
import hashlib
import json
import os
import shlex
import sys
from types import SimpleNamespace

from micd.training import runs


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    ratio=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    table=r"results|ablation",
    seed=r"\d+",
    tag=r"[0-9a-f]{8}",
    name=r"[A-Za-z0-9_]+",


CONDA_ENV = "../envs/micd.yaml"


def check_site_environment():
    """The slurm profile takes the account and partition from sbatch's own variables
    (``$SBATCH_ACCOUNT``, ``$SBATCH_PARTITION`` in its default-resources); one that is not
    exported would reach sbatch as that literal text, so stop here and say what to do. Inside
    a submitted job (which sbatch gives neither) the values were settled at submission.
    """
    if "SLURM_JOB_ID" in os.environ:
        return
    defaults = workflow.resource_settings.default_resources
    wanted = [a for a in (defaults.args if defaults else []) if "$SBATCH_" in a]
    missing = [
        name
        for name in ("SBATCH_ACCOUNT", "SBATCH_PARTITION")
        if any(f"${name}" in a for a in wanted) and name not in os.environ
    ]
    if missing:
        raise WorkflowError(
            f"the profile takes the SLURM account and partition from $SBATCH_ACCOUNT and "
            f"$SBATCH_PARTITION, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not exported: export SBATCH_ACCOUNT=<account> SBATCH_PARTITION=<partition> "
            "(an empty value where the cluster needs none) and run again (docs/cluster.md)"
        )


check_site_environment()


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def family(wildcards):
    return dataset_config(wildcards)["family"]


def train_settings(wildcards):
    """The run's train settings (micd.training.runs.train_settings)."""
    return runs.train_settings(config, wildcards.dataset, wildcards.method)


def preprocess_settings(wildcards):
    """The top-level preprocess settings with the data set's own overrides."""
    return {**config["preprocess"], **dataset_config(wildcards)["preprocess"]}


def spaced(key):
    """A params function: the data set's preprocess setting ``key`` as space-separated words."""
    return lambda wildcards: " ".join(map(str, preprocess_settings(wildcards)[key]))


def run_dir(wildcards):
    return f"results/{wildcards.dataset}/runs/{wildcards.ratio}p/{wildcards.method}/seed{wildcards.seed}"


def as_json(value):
    return json.dumps(value, sort_keys=True)


def sensitivity_variants():
    """The mask-sensitivity grid as named MICD variants (micd.training.runs.sensitivity_variants)."""
    return runs.sensitivity_variants(config)


def method_spec(name):
    """(registered method, its settings) of a method or variant name (the {method} wildcard)."""
    return runs.method_spec(config, name)


def trains_on_every_case(name):
    """Whether a method or variant ignores the labelled split and trains on every training case
    (the upper bound): its run is the same at every ratio, so the workflow trains it once.
    """
    return runs.trains_on_every_case(method_spec(name)[0])


def every_case_runs():
    """The configured methods and variants that train on every training case, as a wildcard
    pattern: each is trained once, at the smallest configured ratio (rules/train.smk).
    """
    names = {*config["methods"], *config["variants"], *config["ablation"]}
    return name_pattern(sorted(n for n in names if trains_on_every_case(n)))


def larger_ratios():
    """The configured ratios but the smallest, as a wildcard pattern."""
    return name_pattern([str(ratio) for ratio in sorted(config["ratios"])[1:]])


def at_smallest_ratio(name):
    """An input function: file ``name`` of the same run at the smallest configured ratio."""
    ratio = min(config["ratios"])
    return (
        lambda wc: f"results/{wc.dataset}/runs/{ratio}p/{wc.method}/seed{wc.seed}/{name}"
    )


def run_records(dataset, methods, seeds, **files):
    """Each run of ``dataset`` (every ratio, ``methods``, ``seeds``) as its dataset, ratio, method
    and seed, plus the path of each named file of its folder: ``metrics="metrics.csv"`` adds
    ``"metrics": "results/.../metrics.csv"``."""
    return [
        {
            "dataset": dataset,
            "ratio": ratio,
            "method": method,
            "seed": seed,
            **{
                key: f"results/{dataset}/runs/{ratio}p/{method}/seed{seed}/{name}"
                for key, name in files.items()
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
        dataset, methods or config["methods"], config["seeds"], metrics="metrics.csv"
    )
    return record_paths(runs, "metrics")


def run_datasets():
    selected = config["run_datasets"] or list(config["datasets"])
    unknown = sorted(set(selected) - set(config["datasets"]))
    if unknown:
        raise ValueError(
            f"run_datasets names {unknown}, which are not in datasets: {sorted(config['datasets'])}"
        )
    return selected


def table_rows(table):
    """Methods (or variants) in the rows of a report table: ``results`` or ``ablation``."""
    return {"results": config["methods"], "ablation": config["ablation"]}[table]


def report_targets():
    """The results tables and figures of every run data set (rules/report.smk: tables, figures)."""
    return [*rules.tables.input, *rules.figures.input]


def name_pattern(names):
    """A wildcard pattern matching exactly ``names`` (nothing when empty)."""
    return "|".join(names) if names else "(?!)"


def datasets_from(*sources):
    """Names of the configured data sets of the given sources, as a wildcard pattern."""
    return name_pattern(
        [name for name, ds in config["datasets"].items() if ds["source"] in sources]
    )


def datasets_with_published_splits():
    return name_pattern(
        [name for name, ds in config["datasets"].items() if ds["published_splits"]]
    )


def published_splits(wildcards):
    """The fetched published split files of a data set, if it has any."""
    if dataset_config(wildcards)["published_splits"]:
        return f"results/{wildcards.dataset}/published_splits"
    return []


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


def archive_layout(wildcards):
    return "synapse" if family(wildcards) == "synapse" else "amos"


def optional_arg(option, value):
    """``option value`` for the shell, or nothing when the value is unset."""
    return f"{option} {shlex.quote(str(value))}" if value is not None else ""


def flag(option, on):
    return option if on else ""


def intended_executor():
    """The executor Snakemake was asked for (`--executor`, or a profile's `executor:`), read from
    its parsed command line: Snakemake tells the workflow its executor only once jobs run, and
    a dry run's is always `dryrun`. None where no command line is found (Snakemake's API).
    """
    import inspect

    for frame in inspect.stack(0):
        args = frame.frame.f_locals.get("args")
        if frame.function == "args_to_api" and hasattr(args, "executor"):
            return args.executor
    return None


def plans_for_a_cluster():
    """Whether this run's jobs go to a cluster scheduler: inside a submitted job, under an
    executor other than the local one, or, without a command line to read, under a profile
    whose default-resources name a SLURM account (profiles/slurm).
    """
    if workflow.remote_exec:
        return True
    executor = intended_executor()
    if executor is not None:
        return executor not in ("local", "dryrun", "touch")
    defaults = workflow.resource_settings.default_resources
    return any(arg.startswith("slurm_") for arg in (defaults.args if defaults else []))


def say_which_jobs_run_here():
    """Below a cluster's dry run: the rules whose jobs run where Snakemake runs. Snakemake prints
    every job of a dry run as `rule`, never `localrule` (its jobs.py: a dry run does not decide
    where a job will run), so the plan would not say it."""
    if workflow.dryrun and plans_for_a_cluster():
        local = ", ".join(sorted(getattr(workflow, "_localrules", ())))
        print(
            f"Run where Snakemake runs, not submitted (Snakefile `localrules`; this plan prints them as `rule`): {local}",
            file=sys.stderr,
        )


if not (workflow.remote_exec or workflow.subprocess_exec):
    atexit.register(say_which_jobs_run_here)


# the working directory, where the relative paths of the config (synapse.placed) and results/ lie
WORKDIR = os.getcwd()


def data_prerequisites():
    """What each data set of this run still needs from its user before it can be fetched: the
    licence accepted, an archive placed or a token exported (micd.prerequisites)."""
    from pathlib import Path

    from micd.prerequisites import missing_prerequisites

    return missing_prerequisites(config, run_datasets(), Path(WORKDIR), os.environ)


def say_what_the_data_sets_lack():
    """At the end of a dry run, below the plan, what the run's data sets lack (rules/acquire.smk
    registers it; not inside jobs)."""
    from micd.prerequisites import plan_message

    missing = data_prerequisites()
    if workflow.dryrun and missing:
        print(plan_message(missing), file=sys.stderr)


def stop_before_a_fetch_that_cannot_start():
    """rules/acquire.smk's onstart: a run (not a dry run) that would fetch a data set lacking what
    its download needs stops before its first job, not beside the other data sets' downloads.
    """
    from micd.prerequisites import plan_message

    missing = data_prerequisites()
    fetching = {
        job.wildcards.dataset
        for job in workflow.dag.needrun_jobs()
        if job.rule.name in ("fetch_zenodo", "fetch_synapse")
    }
    blocked = {name: problem for name, problem in missing.items() if name in fetching}
    if blocked:
        raise WorkflowError(plan_message(blocked, stopped=True))


def gpu_job_resources(stage):
    """Resources of a GPU stage's jobs (config `resources.<stage>`), without the unset ones.
    A local run asks for none of a cluster's (memory, time limit, CPUs per GPU, sbatch options),
    so its plan shows none; `gpu` only where `--resources gpu=N` makes it count (README, "On a
    workstation").
    """
    wanted = {
        name: value
        for name, value in config["resources"][stage].items()
        if value is not None
    }
    if plans_for_a_cluster():
        return wanted
    counted = "gpu" in wanted and "gpu" in workflow.resource_settings.resources
    return {"gpu": wanted["gpu"]} if counted else {}


def export_device_slots():
    """Config `resources.device_slots` into the environment that local jobs inherit, where
    ``micd train`` and ``micd infer`` take their slot options' defaults (micd.devices).
    """
    from micd.devices import SLOT_ENVIRONMENT

    slots = config["resources"]["device_slots"]
    for key, name in SLOT_ENVIRONMENT.items():
        os.environ[name] = str(slots[key])


export_device_slots()


# Report (rules/report.smk): output paths and the helpers of its rules.

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
    """`micd report`'s published files and, where the main table shows only some methods'
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
        train_log="train_log.jsonl",
        validation="validation.csv",
    )


def qualitative_runs(wildcards):
    """The first seed's run of every method and ratio: each panel is one model's prediction."""
    return run_records(
        wildcards.dataset,
        config["methods"],
        config["seeds"][:1],
        predictions="predictions",
    )
