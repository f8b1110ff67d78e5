rule infer:
    input:
        model=MODEL,
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
    output:
        directory(PREDICTIONS),
    log:
        "results/logs/{dataset}/infer_{ratio}p_{method}_seed{seed}.log",
    conda:
        CONDA_ENV
    threads: config["resources"]["train_threads"]
    resources:
        **gpu_job_resources("infer"),
    params:
        blending=config["evaluation"]["blending"],
        batch_size=config["evaluation"]["batch_size"],
        original_grid=(
            "--original-grid"
            if config["evaluation"]["original_grid"]
            else "--no-original-grid"
        ),
    shell:
        "micd infer --model {input.model} --data-dir {input.data} --cases {input.cases} "
        "--out {output} --blending {params.blending} --batch-size {params.batch_size} "
        "{params.original_grid} --threads {threads} > {log} 2>&1"


rule metrics:
    input:
        predictions=PREDICTIONS,
        data="results/{dataset}/preprocessed",
        cases="results/{dataset}/splits/test.txt",
    output:
        METRICS,
    log:
        "results/logs/{dataset}/metrics_{ratio}p_{method}_seed{seed}.log",
    conda:
        CONDA_ENV
    params:
        family=family,
        both_empty_dice=config["evaluation"]["both_empty_dice"],
        empty_asd=config["evaluation"]["empty_asd"],
    shell:
        "micd metrics --predictions {input.predictions} --data-dir {input.data} "
        "--cases {input.cases} --family {params.family} --dataset {wildcards.dataset} "
        "--ratio {wildcards.ratio} --method {wildcards.method} --seed {wildcards.seed} "
        "--both-empty-dice {params.both_empty_dice} --empty-asd {params.empty_asd} "
        "--out {output} > {log} 2>&1"
