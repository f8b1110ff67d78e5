rule report:
    input:
        lambda wc: metrics_files(wc.dataset, table_rows(wc.table)),
    output:
        table_md="results/tables/{dataset}_{table}.md",
        table_csv="results/tables/{dataset}_{table}.csv",
        figure="results/figures/{dataset}_{table}_dice_per_class.png",
    log:
        "results/logs/{dataset}/report_{table}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=lambda wc: " ".join(table_rows(wc.table)),
        caption=lambda wc: f"{wc.dataset}, {wc.table}: test-set Dice (%) and ASD (voxels), seeds {config['seeds']}",
    shell:
        "micd report --metrics {input} --family {params.family} --methods {params.methods} "
        "--table-md {output.table_md} --table-csv {output.table_csv} --figure {output.figure} "
        "--caption {params.caption:q} > {log} 2>&1"


rule sensitivity_report:
    input:
        lambda wc: metrics_files(wc.dataset, list(sensitivity_variants())),
    output:
        table_csv="results/tables/{dataset}_mask_sensitivity.csv",
        figure="results/figures/{dataset}_mask_sensitivity.png",
    log:
        "results/logs/{dataset}/sensitivity_report.log",
    conda:
        CONDA_ENV
    params:
        grid=lambda wc: as_json(
            {name: v["settings"] for name, v in sensitivity_variants().items()}
        ),
    shell:
        "micd sensitivity --metrics {input} --grid {params.grid:q} "
        "--table-csv {output.table_csv} --figure {output.figure} > {log} 2>&1"


rule ablation:
    input:
        expand(
            rules.report.output,
            dataset=run_datasets(),
            table="ablation",
        ),


rule sensitivity:
    input:
        expand(
            rules.sensitivity_report.output,
            dataset=run_datasets(),
        ),
