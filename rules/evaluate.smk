rule infer:
    input:
        model="results/{dataset}/runs/{ratio}p/{method}/seed{seed}/model.pt",
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
    output:
        directory("results/{dataset}/runs/{ratio}p/{method}/seed{seed}/predictions"),
    log:
        "results/logs/{dataset}/infer_{ratio}p_{method}_seed{seed}.log",
    conda:
        CONDA_ENV
    threads: config["resources"]["train_threads"]
    shell:
        "micd infer --model {input.model} --data-dir {input.data} --cases {input.cases} "
        "--out {output} --threads {threads} > {log} 2>&1"


rule metrics:
    input:
        predictions="results/{dataset}/runs/{ratio}p/{method}/seed{seed}/predictions",
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
    output:
        "results/{dataset}/runs/{ratio}p/{method}/seed{seed}/metrics.csv",
    log:
        "results/logs/{dataset}/metrics_{ratio}p_{method}_seed{seed}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
    shell:
        "micd metrics --predictions {input.predictions} --data-dir {input.data} "
        "--cases {input.cases} --family {params.family} --dataset {wildcards.dataset} "
        "--ratio {wildcards.ratio} --method {wildcards.method} --seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"
