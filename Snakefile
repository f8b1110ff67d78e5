import sys
from pathlib import Path

import yaml
from snakemake.utils import min_version, update_config, validate

from micd.config.check import ConfigError, check_config, check_config_file
from micd.config.strings import typed_config
from micd.report.landing import landing_words

min_version("9.0")

# the defaults file named in an empty file's or a YAML error's message (Snakemake names none; it
# reads --configfile files before this Snakefile runs, so their messages stay its own)
try:
    if Path("config/config.yaml").exists():  # absent, Snakemake asks for a --configfile
        check_config_file("config/config.yaml")
except ConfigError as error:
    sys.exit(f"Error: {error}")


configfile: "config/config.yaml"


# `--config seeds=[0,1]` gives the text "0" and "1" below the top level: typed as the schema says.
# Only what --config gave: text written in a config file (mask_block: "8") is the config check's to name.
update_config(
    config,
    typed_config(
        dict(workflow.config_settings.config or {}),
        yaml.safe_load(Path(workflow.source_path("config/schema.yaml")).read_text()),
    ),
)
# short messages naming each unknown key, bad value or unregistered method (src/micd/config/check.py);
# the message alone, as a raised error would add Snakemake's traceback lines under it
try:
    check_config(config, workflow.source_path("config/schema.yaml"))
except ConfigError as error:
    sys.exit(f"Error: {error}")
validate(config, "config/schema.yaml", set_default=True)
# derived, not a setting: the words of the report's landing page, which can read only the config
config["report_landing"] = landing_words(config)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/acquire.smk"
include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/split.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report_common.smk"
include: "rules/report.smk"
include: "rules/segment.smk"


# Light jobs run where Snakemake runs, not as cluster jobs (docs/cluster.md); so do downloads,
# since compute nodes often have no internet access.
localrules:
    fetch_zenodo,
    fetch_synapse,
    fetch_published_splits,
    synthesise,
    split,
    share_every_case_run,
    report_config,
    table,
    report,
    dice_per_class,
    dice_vs_ratio,
    training_curves,
    qualitative,
    sensitivity_report,
    keep_tables,
    keep_figure,


rule all:
    default_target: True
    input:
        report_targets(),
