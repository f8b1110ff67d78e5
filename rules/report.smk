# Tables and figures of finished runs. Each writes {file}.provenance.json beside every file it
# writes and reads only the runs' outputs, so `snakemake tables` / `snakemake figures` rebuild
# them alone. Their paths and the helpers of these rules: rules/report_common.smk.


# The settings every sidecar records, as a file. Each setting is a parameter of its own
# (`train.max_epochs=8`), so a dry run's reason after a change names the settings that changed;
# the file's text is derived from the output's name, which keeps Snakemake from comparing it too.
rule report_config:
    output:
        REPORT_CONFIG,
    log:
        "results/logs/{dataset}/report_config.log",
    conda:
        CONDA_ENV
    params:
        **report_setting_params(),
        text=lambda wc, output: report_config(wc),
    shell:
        "printf '%s\\n' {params.text:q} > {output} && sha256sum {output} > {log}"


# One table of a data set (results or ablation), main and per organ, in every format.
rule table:
    input:
        metrics=lambda wc: metrics_files(wc.dataset, table_rows(wc.table)),
        published=published_reference,
        config=REPORT_CONFIG,
    output:
        md=table_file("md"),
        tex=table_file("tex"),
        html=table_file("html"),
        csv=table_file("csv"),
        organs_md=table_file("md", per_organ=True),
        organs_tex=table_file("tex", per_organ=True),
        organs_html=table_file("html", per_organ=True),
        provenance=sidecars(*TABLE_FILES),
    log:
        "results/logs/{dataset}/table_{table}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=lambda wc: " ".join(table_rows(wc.table)),
        published=published_args,
        subject=lambda wc: optional_arg(
            "--subject", "ablation of MICD" if wc.table == "ablation" else None
        ),
        note=split_origins,
    shell:
        "micd tables --metrics {input.metrics} --family {params.family} --methods {params.methods} "
        "--table-md {output.md} --table-tex {output.tex} --table-html {output.html} "
        "--table-csv {output.csv} --organs-md {output.organs_md} --organs-tex {output.organs_tex} "
        "--organs-html {output.organs_html} {params.published} {params.subject} --note {params.note:q} "
        "--config {input.config} > {log} 2>&1"


rule dice_per_class:
    input:
        metrics=lambda wc: metrics_files(wc.dataset, table_rows(wc.table)),
        config=REPORT_CONFIG,
    output:
        figure=figure(DICE_PER_CLASS, "dice_per_class.rst", "Dice per class ({table})"),
        formats=other_formats(DICE_PER_CLASS),
        provenance=sidecars(*figure_files(DICE_PER_CLASS)),
    log:
        "results/logs/{dataset}/dice_per_class_{table}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=lambda wc: " ".join(table_rows(wc.table)),
    shell:
        "micd dice-per-class --metrics {input.metrics} --family {params.family} --methods {params.methods} "
        "--figure {output.figure} {output.formats} --config {input.config} > {log} 2>&1"


rule dice_vs_ratio:
    input:
        metrics=lambda wc: metrics_files(wc.dataset),
        config=REPORT_CONFIG,
    output:
        figure=figure(DICE_VS_RATIO, "dice_vs_ratio.rst", "Dice against labelled ratio"),
        formats=other_formats(DICE_VS_RATIO),
        provenance=sidecars(*figure_files(DICE_VS_RATIO)),
    log:
        "results/logs/{dataset}/dice_vs_ratio.log",
    conda:
        CONDA_ENV
    params:
        methods=" ".join(config["methods"]),
    shell:
        "micd dice-vs-ratio --metrics {input.metrics} --methods {params.methods} "
        "--figure {output.figure} {output.formats} --config {input.config} > {log} 2>&1"


rule training_curves:
    input:
        logs=lambda wc: record_paths(training_runs(wc), "train_log"),
        validation=lambda wc: record_paths(training_runs(wc), "validation"),
        config=REPORT_CONFIG,
    output:
        figure=figure(
            TRAINING_CURVES, "training_curves.rst", "training curves ({table})"
        ),
        formats=other_formats(TRAINING_CURVES),
        provenance=sidecars(*figure_files(TRAINING_CURVES)),
    log:
        "results/logs/{dataset}/training_curves_{table}.log",
    conda:
        CONDA_ENV
    params:
        runs=lambda wc: as_json(training_runs(wc)),
        methods=lambda wc: " ".join(table_rows(wc.table)),
    shell:
        "micd training-curves --runs {params.runs:q} --methods {params.methods} "
        "--figure {output.figure} {output.formats} --config {input.config} > {log} 2>&1"


rule qualitative:
    input:
        predictions=lambda wc: record_paths(qualitative_runs(wc), "predictions"),
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
        config=REPORT_CONFIG,
    output:
        figure=figure(QUALITATIVE, "qualitative.rst", "qualitative comparison"),
        formats=other_formats(QUALITATIVE),
        provenance=sidecars(*figure_files(QUALITATIVE)),
    log:
        "results/logs/{dataset}/qualitative.log",
    conda:
        CONDA_ENV
    params:
        runs=lambda wc: as_json(qualitative_runs(wc)),
        family=family,
        case=optional_arg("--case", config["qualitative_case"]),
    shell:
        "micd qualitative --runs {params.runs:q} --data-dir {input.data} --cases {input.cases} "
        "{params.case} --family {params.family} --figure {output.figure} {output.formats} "
        "--config {input.config} > {log} 2>&1"


rule sensitivity_report:
    input:
        metrics=lambda wc: metrics_files(wc.dataset, list(sensitivity_variants())),
        config=REPORT_CONFIG,
    output:
        table_csv=report(
            SENSITIVITY_TABLE,
            caption="../report/mask_sensitivity.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={
                "data set": "{dataset}",
                "table": "mask sensitivity",
                "format": "csv",
            },
        ),
        figure=figure(SENSITIVITY_FIGURE, "mask_sensitivity.rst", "mask sensitivity"),
        formats=other_formats(SENSITIVITY_FIGURE),
        provenance=sidecars(SENSITIVITY_TABLE, *figure_files(SENSITIVITY_FIGURE)),
    log:
        "results/logs/{dataset}/sensitivity_report.log",
    conda:
        CONDA_ENV
    params:
        grid=lambda wc: as_json(
            {name: v["settings"] for name, v in sensitivity_variants().items()}
        ),
    shell:
        "micd sensitivity --metrics {input.metrics} --grid {params.grid:q} "
        "--table-csv {output.table_csv} --figure {output.figure} {output.formats} "
        "--config {input.config} > {log} 2>&1"


# Copies of this configuration's tables and figures under results/configs/{dataset}/{tag}/
# (rules/report_common.smk: KEPT), which a run of another configuration leaves as they are.
rule keep_tables:
    input:
        files=TABLE_FILES + sidecars(*TABLE_FILES),
        tag=this_configuration,
    output:
        kept(*TABLE_FILES, *sidecars(*TABLE_FILES)),
    log:
        "results/logs/{dataset}/keep_{table}_{tag}.log",
    run:
        copy_files(input.files, output, log[0])


rule keep_figure:
    input:
        files=figure_files(FIGURE) + sidecars(*figure_files(FIGURE)),
        tag=this_configuration,
    output:
        kept(*figure_files(FIGURE), *sidecars(*figure_files(FIGURE))),
    log:
        "results/logs/{dataset}/keep_{name}_{tag}.log",
    run:
        copy_files(input.files, output, log[0])


RESULT_FIGURES = in_every_format(
    DICE_PER_CLASS, TRAINING_CURVES, DICE_VS_RATIO, QUALITATIVE
)
ABLATION_FILES = TABLE_FILES + in_every_format(DICE_PER_CLASS, TRAINING_CURVES)


rule tables:
    input:
        expand(TABLE_FILES, dataset=run_datasets(), table="results"),
        kept_here(TABLE_FILES, table="results"),


# The old name of the tables target, for one release: `snakemake report` builds the tables and
# says, in a plan too, that it is now `snakemake tables` (a job without outputs runs every time,
# so the line shows every time; its log holds the line).
rule report:
    input:
        rules.tables.input,
    log:
        "results/logs/report.log",
    message:
        REPORT_RENAMED
    run:
        with open(log[0], "w") as f:
            print(REPORT_RENAMED, file=f)


rule figures:
    input:
        expand(RESULT_FIGURES, dataset=run_datasets(), table="results"),
        kept_here(RESULT_FIGURES, table="results"),


rule ablation:
    input:
        expand(ABLATION_FILES, dataset=run_datasets(), table="ablation"),
        kept_here(ABLATION_FILES, table="ablation"),


rule sensitivity:
    input:
        expand(
            rules.sensitivity_report.output,
            dataset=run_datasets(),
        ),
