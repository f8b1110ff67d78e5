import atexit
import json
import os
import shlex
import sys

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


# A run's folder, the one place its path is spelled, and what it holds (micd train writes the
# first three, micd infer the predictions, micd metrics the scores); every path of a run in the
# rules and their helpers is one of these.
RUN = "results/{dataset}/runs/{ratio}p/{method}/seed{seed}"
MODEL = f"{RUN}/model.pt"
TRAIN_LOG = f"{RUN}/train_log.jsonl"
VALIDATION = f"{RUN}/validation.csv"
PREDICTIONS = f"{RUN}/predictions"
METRICS = f"{RUN}/metrics.csv"


def run_path(pattern, dataset, ratio, method, seed):
    """``pattern`` (RUN or a path in it) of one run."""
    return pattern.format(dataset=dataset, ratio=ratio, method=method, seed=seed)


def run_dir(wildcards):
    return run_path(
        RUN, wildcards.dataset, wildcards.ratio, wildcards.method, wildcards.seed
    )


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


def at_smallest_ratio(pattern):
    """An input function: ``pattern`` (a path in RUN) of the same run at the smallest
    configured ratio."""
    ratio = min(config["ratios"])
    return lambda wc: run_path(pattern, wc.dataset, ratio, wc.method, wc.seed)


def run_datasets():
    selected = config["run_datasets"] or list(config["datasets"])
    unknown = sorted(set(selected) - set(config["datasets"]))
    if unknown:
        raise ValueError(
            f"run_datasets names {unknown}, which are not in datasets: {sorted(config['datasets'])}"
        )
    return selected


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
