from snakemake.utils import min_version, validate

from micd.config_check import check_config

min_version("9.0")


configfile: "config/config.yaml"


# short messages naming each unknown key, bad value or unregistered method (src/micd/config_check.py)
check_config(config, workflow.source_path("config/schema.yaml"))
validate(config, "config/schema.yaml", set_default=True)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/acquire.smk"
include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/split.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# Light jobs run where Snakemake runs, not as cluster jobs (docs/cluster.md); so do downloads,
# since compute nodes often have no internet access.
localrules:
    fetch_zenodo,
    fetch_synapse,
    fetch_published_splits,
    synthesise,
    split,
    share_every_case_run,
    report,
    dice_per_class,
    dice_vs_ratio,
    training_curves,
    qualitative,
    sensitivity_report,


rule all:
    default_target: True
    input:
        report_targets(),
