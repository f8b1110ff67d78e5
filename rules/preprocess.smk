rule preprocess:
    input:
        "results/{dataset}/converted",
    output:
        directory("results/{dataset}/preprocessed"),
    log:
        "results/logs/{dataset}/preprocess.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        mode=lambda wc: preprocess_settings(wc)["mode"],
        grid=spaced("grid"),
        spacing=spaced("spacing"),
        hu_window=spaced("hu_window"),
    shell:
        "micd preprocess --manifest {input}/manifest.csv --out {output} --family {params.family} "
        "--mode {params.mode} --grid {params.grid} --spacing {params.spacing} "
        "--hu-window {params.hu_window} > {log} 2>&1"
