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
        mode=config["preprocess"]["mode"],
        grid=" ".join(map(str, config["preprocess"]["grid"])),
        spacing=" ".join(map(str, config["preprocess"]["spacing"])),
        hu_window=" ".join(map(str, config["preprocess"]["hu_window"])),
    shell:
        "micd preprocess --manifest {input}/manifest.csv --out {output} --family {params.family} "
        "--mode {params.mode} --grid {params.grid} --spacing {params.spacing} "
        "--hu-window {params.hu_window} > {log} 2>&1"
