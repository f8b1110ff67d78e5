rule synthesise:
    output:
        directory("results/{dataset}/raw"),
    log:
        "results/logs/{dataset}/synthesise.log",
    wildcard_constraints:
        dataset=datasets_from("synthetic"),
    conda:
        CONDA_ENV
    params:
        n_train=lambda wc: dataset_config(wc)["synthetic"]["n_train"],
        n_validation=lambda wc: dataset_config(wc)["synthetic"]["n_validation"],
        seed=lambda wc: dataset_config(wc)["synthetic"]["seed"],
        options=lambda wc: as_json(dataset_config(wc)["synthetic"]["options"]),
    shell:
        "micd synthesise --out {output} --n-train {params.n_train} "
        "--n-validation {params.n_validation} --seed {params.seed} "
        "--options {params.options:q} > {log} 2>&1"
