rule train:
    input:
        data="results/{dataset}/preprocessed",
        train="results/{dataset}/splits/train.txt",
        labelled="results/{dataset}/splits/labelled_{ratio}p.txt",
        unlabelled="results/{dataset}/splits/unlabelled_{ratio}p.txt",
        eval="results/{dataset}/splits/eval.txt",
    output:
        model=MODEL,
        log=TRAIN_LOG,
        validation=VALIDATION,
    log:
        "results/logs/{dataset}/train_{ratio}p_{method}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_{ratio}p_{method}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: config["resources"]["train_threads"]
    resources:
        **gpu_job_resources("train"),
    params:
        out_dir=run_dir,
        family=family,
        method=lambda wc: method_spec(wc.method)[0],
        method_settings=lambda wc: as_json(method_spec(wc.method)[1]),
        train_settings=lambda wc: as_json(train_settings(wc)),
    # exec: SIGTERM (preemption, time limit) must reach micd, which checkpoints before it exits;
    # a shell in between would die at once and take the job down without the checkpoint.
    shell:
        "exec micd train --data-dir {input.data} --train {input.train} --labelled {input.labelled} "
        "--unlabelled {input.unlabelled} --eval {input.eval} --out-dir {params.out_dir} "
        "--method {params.method} --variant {wildcards.method} --method-settings {params.method_settings:q} "
        "--train-settings {params.train_settings:q} --family {params.family} "
        "--dataset {wildcards.dataset} --ratio {wildcards.ratio} --seed {wildcards.seed} "
        "--threads {threads} > {log} 2>&1"


# The upper bound trains on every training case whatever the labelled ratio: it is trained once,
# at the smallest configured ratio, and each larger ratio's run folder gets a copy of that run's
# outputs, so that its predictions, scores and curves sit beside the other rows of the ratio.
rule share_every_case_run:
    input:
        model=at_smallest_ratio(MODEL),
        log=at_smallest_ratio(TRAIN_LOG),
        validation=at_smallest_ratio(VALIDATION),
    output:
        model=MODEL,
        log=TRAIN_LOG,
        validation=VALIDATION,
    log:
        "results/logs/{dataset}/share_{ratio}p_{method}_seed{seed}.log",
    wildcard_constraints:
        method=every_case_runs(),
        ratio=larger_ratios(),
    conda:
        CONDA_ENV
    shell:
        "(cp {input.model} {output.model} && cp {input.log} {output.log} && "
        "cp {input.validation} {output.validation}) > {log} 2>&1"


ruleorder: share_every_case_run > train
