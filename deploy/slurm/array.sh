#!/usr/bin/env bash
# Submit a campaign as a SLURM job array: no Dask scheduler has to live for the whole campaign.
#
#   deploy/slurm/array.sh RAW STORE TASKS [sbatch options...]
#   deploy/slurm/array.sh /data/screen1/raw /scratch/$USER/screen1.zarr 16 --partition=cpu --cpus-per-task=8 --mem=32G
#
# Five submissions, each waiting for the one before to succeed (afterok):
# 1. layout: `spheroid convert RAW --out STORE --layout-only` makes the store with every field (and
#    reads every input file's header) once, so that the tasks never race to create it;
# 2. parts, an array of TASKS tasks: task I takes part I/TASKS of the fields (wells) in plate order
#    and runs convert, preprocess, segment and the cell-cycle measurement on it with a local Dask
#    cluster of --cpus-per-task workers inside its own allocation;
# 3. classify: the cell-cycle thresholds fitted over all wells at once, every nucleus table written;
# 4. track, an array of SPHEROID_TRACK_TASKS (default TASKS) tasks: each tracks the nuclei of its part
#    of the fields (tracking is one process per field: up to one task per field pays off);
# 5. report: STORE/report/index.html, the conditions from the plate layout of SPHEROID_EXPERIMENT
#    (an experiment file, configs/experiment.yaml) when it is set, else one condition per well.
# All run deploy/slurm/pipeline.sbatch (steps layout, part, classify, track, report). The sbatch
# options given here apply to all of them (the parts are the ones that need them).
# A task that fails is resubmitted alone with the same part count, e.g. part 3 of 16:
#   sbatch --array=3 --export=ALL,SPHEROID_SLICES=16,SPHEROID_REPO=$PWD deploy/slurm/pipeline.sbatch RAW STORE
# followed by the classify job and the track array (SPHEROID_STEP=classify, then SPHEROID_STEP=track).
# Prints the job ids. Environment settings: see pipeline.sbatch (SPHEROID_CONFIGS, SPHEROID_SIF...).
set -euo pipefail

RAW=${1:?usage: array.sh RAW STORE TASKS [sbatch options...]}
STORE=${2:?usage: array.sh RAW STORE TASKS [sbatch options...]}
TASKS=${3:?usage: array.sh RAW STORE TASKS [sbatch options...]}
shift 3
[[ $TASKS =~ ^[1-9][0-9]*$ ]] || { echo "array.sh: TASKS must be a positive number (got $TASKS)" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SCRIPT=$REPO/deploy/slurm/pipeline.sbatch
export SPHEROID_REPO=$REPO
unset SPHEROID_STEP  # each submission says which step it is

submit() { sbatch --parsable "$@" | cut -d';' -f1; }

layout=$(submit --job-name=spheroid-layout --export=ALL,SPHEROID_STEP=layout "$@" "$SCRIPT" "$RAW" "$STORE")
parts=$(submit --job-name=spheroid-part --array="0-$((TASKS - 1))" --dependency="afterok:$layout" \
    --export="ALL,SPHEROID_STEP=part,SPHEROID_SLICES=$TASKS" "$@" "$SCRIPT" "$RAW" "$STORE")
classify=$(submit --job-name=spheroid-classify --dependency="afterok:$parts" \
    --export="ALL,SPHEROID_STEP=classify" "$@" "$SCRIPT" "$RAW" "$STORE")
TRACK_TASKS=${SPHEROID_TRACK_TASKS:-$TASKS}
track=$(submit --job-name=spheroid-track --array="0-$((TRACK_TASKS - 1))" --dependency="afterok:$classify" \
    --export="ALL,SPHEROID_STEP=track,SPHEROID_SLICES=$TRACK_TASKS" "$@" "$SCRIPT" "$RAW" "$STORE")
report=$(submit --job-name=spheroid-report --dependency="afterok:$track" \
    --export="ALL,SPHEROID_STEP=report" "$@" "$SCRIPT" "$RAW" "$STORE")
echo "layout job $layout, parts array $parts ($TASKS tasks), classify job $classify, track array $track ($TRACK_TASKS tasks), report job $report"
