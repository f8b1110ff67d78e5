#!/usr/bin/env bash
# The synthetic benchmark (docs/benchmark.md) in parts, each one workflow invocation that fits
# 150 minutes on this project's 2-core machine, timed and recorded in
# bench/results/benchmark_parts.jsonl. From the repository root, with the venv active:
#
#   bash bench/history/benchmark_parts.sh choice A5a A5b seeds A10a A10b ablation sensitivity8_16 sensitivity final
#
# or, where results/ does not outlive a session, the grid in five parts whose runs are archived:
#
#   bash bench/history/benchmark_parts.sh grid1 grid2 grid3 grid4 grid5
#
# (The recorded runs took `choice core5 added5 A5a cld_ablation seeds`: the same 5 % runs, grouped
# as the rows were added; `since_dhc` trains the two rows published since DHC, at 5 % only.)
# A part whose runs are done costs only its report jobs; an interrupted part resumes where it
# stopped when started again (each run resumes from its checkpoint). `final` builds the tables
# and figures of config/benchmark.yaml alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
# keep going: one run that fails (its log says why) does not stop the others of its part
BASE=(--profile profiles/local --keep-going --configfile config/benchmark.yaml)
P=bench/history/parts
CHOICE=results/synthetic_benchmark/runs/5p
RUNS10=results/synthetic_benchmark/runs/10p
# the mask-sensitivity grid's cells at 5 % as the workflow names them (config/benchmark.yaml:
# ratios 0.3/0.5/0.7 x blocks 8/16/32; its own mask, 0.5 and 8, is the micd run itself), two per
# part so that a part fits a session however slow the day
GRID=(micd micd_mask30_block8 micd_mask70_block8 micd_mask30_block16 micd_mask50_block16
    micd_mask70_block16 micd_mask30_block32 micd_mask50_block32 micd_mask70_block32)

run_part() {
    local name=$1
    shift
    local started end commit status=0
    started=$(date +%s)
    # the checkout the part starts from (a pull while it runs must not change the record)
    commit=$(git describe --always --dirty)
    echo "== part $name: snakemake $*" >&2
    snakemake "$@" || status=$?
    end=$(date +%s)
    python3 - "$name" "$started" "$end" "$status" "$commit" "$*" <<'PY'
import json, sys, datetime as dt
from micd.provenance import machine_description
name, started, end, status, commit, args = sys.argv[1:]
record = {"benchmark": "synthetic_benchmark_part", "part": name, "commit": commit, "command": "snakemake " + args,
          "started": dt.datetime.fromtimestamp(int(started), dt.timezone.utc).isoformat(), "wall_min": round((int(end) - int(started)) / 60, 1),
          "exit_status": int(status), "machine": machine_description()}
open("bench/results/benchmark_parts.jsonl", "a").write(json.dumps(record) + "\n")
print(json.dumps(record))
PY
    return "$status"
}

# a part of the mask grid: its two cells trained and scored, every finished run archived under
# bench/results (benchmark_summary.py), and the heat map redrawn from every archived cell
grid_part() {
    local name=$1 first=$(( (${1#grid} - 1) * 2 )) status=0 cell targets=()
    for cell in "${GRID[@]:$first:2}"; do targets+=("$CHOICE/$cell/seed0/metrics.csv"); done
    run_part "$name" "${targets[@]}" "${BASE[@]}" $P/5p.yaml || status=$?
    python bench/history/benchmark_summary.py
    python bench/history/archived_sensitivity.py
    return "$status"
}

for part in "$@"; do
    case $part in
        choice) run_part choice "$CHOICE/micd/seed0/model.pt" "$CHOICE/micd_mcpc_masked_prediction/seed0/model.pt" \
            "$CHOICE/micd_cfc_kl_one_sided/seed0/model.pt" "${BASE[@]}" ;;
        core5) run_part core5 "${BASE[@]}" $P/5p.yaml $P/core_rows.yaml ;;
        added5) run_part added5 "${BASE[@]}" $P/5p.yaml $P/added_rows.yaml ;;
        A5a) run_part A5a "${BASE[@]}" $P/5p.yaml $P/first_rows.yaml ;;
        A5b) run_part A5b "${BASE[@]}" $P/5p.yaml $P/last_rows.yaml ;;
        A10a) run_part A10a "${BASE[@]}" $P/10p.yaml $P/first_rows.yaml ;;
        # MICD (the part's longest run, so that it does not run alone at the end) and DHC with its
        # two weightings (the rows MICD is measured against) first
        A10b) run_part A10b "${BASE[@]}" $P/10p.yaml $P/last_rows.yaml \
            --prioritize "$RUNS10"/{micd,dhc,distdw,diffdw}/seed0/model.pt ;;
        # the part of A10b that one session could train on a slower day (docs/benchmark.md)
        A10b_trained) run_part A10b_trained "${BASE[@]}" $P/10p.yaml $P/last_rows_trained.yaml ;;
        since_dhc) run_part since_dhc "${BASE[@]}" $P/since_dhc.yaml ;;
        # DHC and MICD at 5 % again beside since_dhc, on its host and with its code and feed (a
        # second workflow in the same folder: --nolock, its targets apart from since_dhc's)
        since_dhc_reference) run_part since_dhc_reference "$CHOICE"/{dhc,micd}/seed0/metrics.csv --nolock \
            "${BASE[@]}" $P/5p.yaml ;;
        seeds) run_part seeds "${BASE[@]}" $P/seeds.yaml ;;
        ablation) run_part ablation ablation "${BASE[@]}" $P/5p.yaml ;;
        # CLD (the last row not yet trained at 5 %) beside the ablation: four runs keep both cores busy
        cld_ablation) run_part cld_ablation ablation "$CHOICE/cld/seed0/metrics.csv" "${BASE[@]}" $P/5p.yaml ;;
        sensitivity8_16) run_part sensitivity8_16 sensitivity "${BASE[@]}" $P/5p.yaml $P/blocks_8_16.yaml ;;
        sensitivity) run_part sensitivity sensitivity "${BASE[@]}" $P/5p.yaml ;;
        grid[1-5]) grid_part "$part" ;;
        final) run_part final "${BASE[@]}" ;;
        *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
