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
