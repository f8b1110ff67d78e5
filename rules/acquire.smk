# Before any job, what each data set of this run still needs from its user (rules/common.smk:
# data_prerequisites): named below a dry run's plan, and a run stops before its first job.
if not (workflow.remote_exec or workflow.subprocess_exec):
    atexit.register(say_what_the_data_sets_lack)


# the workflow's one onstart handler: Snakemake runs it once the jobs are planned, never in a dry run
onstart:
    stop_before_a_fetch_that_cannot_start()


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


rule fetch_zenodo:
    output:
        "results/{dataset}/download/archive.zip",
    log:
        "results/logs/{dataset}/fetch.log",
    wildcard_constraints:
        dataset=datasets_from("zenodo"),
    conda:
        CONDA_ENV
    params:
        api_url=lambda wc: dataset_config(wc)["zenodo"]["api_url"],
        file=lambda wc: dataset_config(wc)["zenodo"]["file"],
        md5=lambda wc: optional_arg("--md5", dataset_config(wc)["zenodo"]["md5"]),
        retries=lambda wc: dataset_config(wc)["zenodo"]["retries"],
        licence=lambda wc: dataset_config(wc)["licence"],
        accepted=lambda wc: flag(
            "--licence-accepted", dataset_config(wc)["licence_accepted"]
        ),
    shell:
        "micd fetch-zenodo --api-url {params.api_url:q} --file {params.file:q} {params.md5} "
        "--out {output} --dataset {wildcards.dataset} --licence {params.licence:q} {params.accepted} "
        "--retries {params.retries} > {log} 2>&1"


rule fetch_synapse:
    output:
        "results/{dataset}/download/archive.zip",
    log:
        "results/logs/{dataset}/fetch.log",
    wildcard_constraints:
        dataset=datasets_from("synapse"),
    conda:
        CONDA_ENV
    params:
        entity=lambda wc: dataset_config(wc)["synapse"]["entity"],
        md5=lambda wc: dataset_config(wc)["synapse"]["md5"],
        placed=lambda wc: optional_arg(
            "--placed", dataset_config(wc)["synapse"]["placed"]
        ),
        token_env=lambda wc: dataset_config(wc)["synapse"]["token_env"],
    shell:
        "micd fetch-synapse --entity {params.entity} --md5 {params.md5} {params.placed} "
        "--token-env {params.token_env} --out {output} > {log} 2>&1"


rule extract:
    input:
        "results/{dataset}/download/archive.zip",
    output:
        directory("results/{dataset}/raw"),
    log:
        "results/logs/{dataset}/extract.log",
    wildcard_constraints:
        dataset=datasets_from("zenodo", "synapse"),
    conda:
        CONDA_ENV
    shell:
        "micd extract --archive {input} --out {output} > {log} 2>&1"


rule fetch_published_splits:
    output:
        directory("results/{dataset}/published_splits"),
    log:
        "results/logs/{dataset}/fetch_published_splits.log",
    wildcard_constraints:
        dataset=datasets_with_published_splits(),
    conda:
        CONDA_ENV
    params:
        base_url=lambda wc: dataset_config(wc)["published_splits"]["base_url"],
        sha256=lambda wc: as_json(dataset_config(wc)["published_splits"]["sha256"]),
    shell:
        "micd fetch-splits --base-url {params.base_url:q} --sha256 {params.sha256:q} "
        "--out {output} > {log} 2>&1"
