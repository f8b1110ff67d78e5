import json


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    ratio=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    table=r"results|ablation",
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


def sensitivity_variants():
    """The mask-sensitivity grid as named MICD variants, e.g. ``micd_mask30_block8``."""
    grid = config["sensitivity"]
    return {
        f"micd_mask{round(ratio * 100)}_block{block}": {
            "method": "micd",
            "settings": {"mask_ratio": ratio, "mask_block": block},
        }
        for ratio in grid["mask_ratios"]
        for block in grid["mask_blocks"]
    }


def method_spec(name):
    """(registered method, its settings) of a method or variant name (the {method} wildcard)."""
    variant = {**sensitivity_variants(), **config["variants"]}.get(name)
    if variant is None:
        return name, config["method_settings"].get(name, {})
    base = config["method_settings"].get(variant["method"], {})
    return variant["method"], {**base, **variant.get("settings", {})}


def metrics_files(dataset, methods=None):
    return expand(
        "results/{dataset}/runs/{ratio}p/{method}/seed{seed}/metrics.csv",
        dataset=dataset,
        ratio=config["ratios"],
        method=methods or config["methods"],
        seed=config["seeds"],
    )


def run_datasets():
    selected = config["run_datasets"] or list(config["datasets"])
    unknown = sorted(set(selected) - set(config["datasets"]))
    if unknown:
        raise ValueError(
            f"run_datasets names {unknown}, which are not in datasets: {sorted(config['datasets'])}"
        )
    return selected


def table_rows(table):
    """Methods (or variants) in the rows of a report table: ``results`` or ``ablation``."""
    return {"results": config["methods"], "ablation": config["ablation"]}[table]


def report_targets():
    return expand(
        [
            "results/tables/{dataset}_results.md",
            "results/tables/{dataset}_results.csv",
            "results/figures/{dataset}_results_dice_per_class.png",
        ],
        dataset=run_datasets(),
    )


def datasets_from(source):
    """Names of the configured data sets of one source, as a wildcard pattern."""
    names = [name for name, ds in config["datasets"].items() if ds["source"] == source]
    return "|".join(names) if names else "(?!)"
