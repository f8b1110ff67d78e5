rule split:
    input:
        data="results/{dataset}/preprocessed",
        published=published_splits,
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
        origin="results/{dataset}/splits/origin.csv",
    log:
        "results/logs/{dataset}/split.log",
    conda:
        CONDA_ENV
    params:
        out="results/{dataset}/splits",
        ratios=" ".join(map(str, config["ratios"])),
        seed=config["split"]["seed"],
        eval_fraction=config["split"]["eval_fraction"],
        test_fraction=config["split"]["test_fraction"],
        published=lambda wc, input: optional_arg("--published", input.published or None),
    shell:
        "micd split --cases {input.data}/cases.csv --out {params.out} --ratios {params.ratios} "
        "--seed {params.seed} --eval-fraction {params.eval_fraction} "
        "--test-fraction {params.test_fraction} {params.published} > {log} 2>&1"
