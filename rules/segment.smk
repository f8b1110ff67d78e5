# One's own CT scans segmented by a run of this workflow (`micd segment`, README "Segment your own
# scans"): put the scans in scans/{folder}/ (.nii.gz or .nii, in HU), then ask for
#   results/{dataset}/runs/{ratio}p/{method}/seed{seed}/segmented/{folder}
# and the run is trained first if it is not there yet.


rule segment:
    input:
        model=MODEL,
        scans="scans/{folder}",
    output:
        directory(f"{RUN}/segmented/{{folder}}"),
    log:
        "results/logs/{dataset}/segment_{ratio}p_{method}_seed{seed}_{folder}.log",
    wildcard_constraints:
        folder=r"[A-Za-z0-9_.-]+",
    conda:
        CONDA_ENV
    threads: config["resources"]["train_threads"]
    params:
        blending=config["evaluation"]["blending"],
        batch_size=config["evaluation"]["batch_size"],
    shell:
        "micd segment {input.scans} --model {input.model} --out {output} --blending {params.blending} "
        "--batch-size {params.batch_size} --threads {threads} > {log} 2>&1"
