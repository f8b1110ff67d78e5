# Tables and figures of finished runs (paths and helpers: rules/common.smk). Each writes
# {file}.provenance.json beside every file it writes and reads only the runs' outputs, so
# `snakemake tables` / `snakemake figures` rebuild them alone.


rule report:
    input:
        metrics=lambda wc: metrics_files(wc.dataset, table_rows(wc.table)),
        published=published_reference,
    output:
        md=table_file("md"),
        tex=table_file("tex"),
        html=table_file("html"),
        csv=table_file("csv"),
        provenance=sidecars(*TABLE_FILES),
    log:
        "results/logs/{dataset}/report_{table}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=lambda wc: " ".join(table_rows(wc.table)),
        published=lambda wc: optional_arg(
            "--published", published_reference(wc) or None
        ),
        title=lambda wc: f"{wc.dataset}, {wc.table}: test-set scores of seeds {config['seeds']}. {split_origins(wc)}",
        config=report_config,
    shell:
        "micd report --metrics {input.metrics} --family {params.family} --methods {params.methods} "
        "--table-md {output.md} --table-tex {output.tex} --table-html {output.html} "
        "--table-csv {output.csv} {params.published} --title {params.title:q} "
        "--config {params.config:q} > {log} 2>&1"


rule dice_per_class:
    input:
        lambda wc: metrics_files(wc.dataset, table_rows(wc.table)),
    output:
        figure=figure(DICE_PER_CLASS, "dice_per_class.rst", "Dice per class ({table})"),
        provenance=sidecars(DICE_PER_CLASS),
    log:
        "results/logs/{dataset}/dice_per_class_{table}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=lambda wc: " ".join(table_rows(wc.table)),
        config=report_config,
    shell:
        "micd dice-per-class --metrics {input} --family {params.family} --methods {params.methods} "
        "--figure {output.figure} --config {params.config:q} > {log} 2>&1"


rule dice_vs_ratio:
    input:
        lambda wc: metrics_files(wc.dataset),
    output:
        figure=figure(DICE_VS_RATIO, "dice_vs_ratio.rst", "Dice against labelled ratio"),
        provenance=sidecars(DICE_VS_RATIO),
    log:
        "results/logs/{dataset}/dice_vs_ratio.log",
    conda:
        CONDA_ENV
    params:
        methods=" ".join(config["methods"]),
        config=report_config,
    shell:
        "micd dice-vs-ratio --metrics {input} --methods {params.methods} "
        "--figure {output.figure} --config {params.config:q} > {log} 2>&1"


rule training_curves:
    input:
        logs=lambda wc: record_paths(training_runs(wc), "train_log"),
        validation=lambda wc: record_paths(training_runs(wc), "validation"),
    output:
        figure=figure(
            TRAINING_CURVES, "training_curves.rst", "training curves ({table})"
        ),
        provenance=sidecars(TRAINING_CURVES),
    log:
        "results/logs/{dataset}/training_curves_{table}.log",
    conda:
        CONDA_ENV
    params:
        runs=lambda wc: as_json(training_runs(wc)),
        methods=lambda wc: " ".join(table_rows(wc.table)),
        config=report_config,
    shell:
        "micd training-curves --runs {params.runs:q} --methods {params.methods} "
        "--figure {output.figure} --config {params.config:q} > {log} 2>&1"


rule qualitative:
    input:
        predictions=lambda wc: record_paths(qualitative_runs(wc), "predictions"),
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
    output:
        figure=figure(QUALITATIVE, "qualitative.rst", "qualitative comparison"),
        provenance=sidecars(QUALITATIVE),
    log:
        "results/logs/{dataset}/qualitative.log",
    conda:
        CONDA_ENV
    params:
        runs=lambda wc: as_json(qualitative_runs(wc)),
        family=family,
        case=optional_arg("--case", config["qualitative_case"]),
        config=report_config,
    shell:
        "micd qualitative --runs {params.runs:q} --data-dir {input.data} --cases {input.cases} "
        "{params.case} --family {params.family} --figure {output.figure} "
        "--config {params.config:q} > {log} 2>&1"


rule sensitivity_report:
    input:
        lambda wc: metrics_files(wc.dataset, list(sensitivity_variants())),
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
        provenance=sidecars(SENSITIVITY_TABLE, SENSITIVITY_FIGURE),
    log:
        "results/logs/{dataset}/sensitivity_report.log",
    conda:
        CONDA_ENV
    params:
        grid=lambda wc: as_json(
            {name: v["settings"] for name, v in sensitivity_variants().items()}
        ),
        config=report_config,
    shell:
        "micd sensitivity --metrics {input} --grid {params.grid:q} "
        "--table-csv {output.table_csv} --figure {output.figure} "
        "--config {params.config:q} > {log} 2>&1"


rule tables:
    input:
        expand(TABLE_FILES, dataset=run_datasets(), table="results"),


rule figures:
    input:
        expand(
            [DICE_PER_CLASS, TRAINING_CURVES, DICE_VS_RATIO, QUALITATIVE],
            dataset=run_datasets(),
            table="results",
        ),


rule ablation:
    input:
        expand(
            TABLE_FILES + [DICE_PER_CLASS, TRAINING_CURVES],
            dataset=run_datasets(),
            table="ablation",
        ),


rule sensitivity:
    input:
        expand(
            rules.sensitivity_report.output,
            dataset=run_datasets(),
        ),
