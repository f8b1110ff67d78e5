rule report:
    input:
        lambda wc: metrics_files(wc.dataset),
    output:
        table_md="results/tables/{dataset}_results.md",
        table_csv="results/tables/{dataset}_results.csv",
        figure="results/figures/{dataset}_dice_per_class.png",
    log:
        "results/logs/{dataset}/report.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=" ".join(config["methods"]),
        caption=lambda wc: f"{wc.dataset}: test-set Dice (%) and ASD (voxels), seeds {config['seeds']}",
    shell:
        "micd report --metrics {input} --family {params.family} --methods {params.methods} "
        "--table-md {output.table_md} --table-csv {output.table_csv} --figure {output.figure} "
        "--caption {params.caption:q} > {log} 2>&1"


rule ablation_report:
    input:
        lambda wc: metrics_files(wc.dataset, config["ablation"]),
    output:
        table_md="results/tables/{dataset}_ablation.md",
        table_csv="results/tables/{dataset}_ablation.csv",
        figure="results/figures/{dataset}_ablation_dice_per_class.png",
    log:
        "results/logs/{dataset}/ablation_report.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        methods=" ".join(config["ablation"]),
        caption=lambda wc: f"{wc.dataset}: MICD ablation, test-set Dice (%) and ASD (voxels), seeds {config['seeds']}",
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
            rules.ablation_report.output,
            dataset=run_datasets(),
        ),


rule sensitivity:
    input:
        expand(
            rules.sensitivity_report.output,
            dataset=run_datasets(),
        ),
