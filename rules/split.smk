rule split:
    input:
        "results/{dataset}/preprocessed",
    output:
        train="results/{dataset}/splits/train.txt",
        eval="results/{dataset}/splits/eval.txt",
        test="results/{dataset}/splits/test.txt",
        labelled=expand(
            "results/{{dataset}}/splits/labelled_{ratio}p.txt", ratio=config["ratios"]
        ),
        unlabelled=expand(
            "results/{{dataset}}/splits/unlabelled_{ratio}p.txt",
            ratio=config["ratios"],
        ),
    log:
        "results/logs/{dataset}/split.log",
    conda:
        CONDA_ENV
    params:
        out="results/{dataset}/splits",
        ratios=" ".join(map(str, config["ratios"])),
        seed=config["split"]["seed"],
        eval_fraction=config["split"]["eval_fraction"],
    shell:
        "micd split --cases {input}/cases.csv --out {params.out} --ratios {params.ratios} "
        "--seed {params.seed} --eval-fraction {params.eval_fraction} > {log} 2>&1"
