rule convert:
    input:
        "results/{dataset}/raw",
    output:
        directory("results/{dataset}/converted"),
    log:
        "results/logs/{dataset}/convert.log",
    conda:
        CONDA_ENV
    params:
        modality=lambda wc: dataset_config(wc)["modality"],
        layout=archive_layout,
    shell:
        "micd convert --archive {input} --out {output} --layout {params.layout} "
        "--modality {params.modality} > {log} 2>&1"
