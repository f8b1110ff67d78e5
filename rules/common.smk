import json


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    ratio=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


CONDA_ENV = "../envs/micd.yaml"


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def family(wildcards):
    return dataset_config(wildcards)["family"]


def run_dir(wildcards):
    return f"results/{wildcards.dataset}/runs/{wildcards.ratio}p/{wildcards.method}/seed{wildcards.seed}"


def as_json(value):
    return json.dumps(value, sort_keys=True)


def metrics_files(dataset):
    return expand(
        "results/{dataset}/runs/{ratio}p/{method}/seed{seed}/metrics.csv",
        dataset=dataset,
        ratio=config["ratios"],
        method=config["methods"],
        seed=config["seeds"],
    )


def report_targets():
    return expand(
        [
            "results/tables/{dataset}_results.md",
            "results/tables/{dataset}_results.csv",
            "results/figures/{dataset}_dice_per_class.png",
        ],
        dataset=list(config["datasets"]),
    )


def datasets_from(source):
    """Names of the configured data sets of one source, as a wildcard pattern."""
    names = [name for name, ds in config["datasets"].items() if ds["source"] == source]
    return "|".join(names) if names else "(?!)"
