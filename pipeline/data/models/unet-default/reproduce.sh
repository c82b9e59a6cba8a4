#!/usr/bin/env bash
# Rebuild the default U-Net shipped in this folder (weights.pt + model.json).
#
#   pipeline/data/models/unet-default/reproduce.sh [WORKDIR] [DATA]
#
# WORKDIR (default runs/unet-default-build) receives the training set and the run; DATA is the
# folder of public samples (default ../shared/data). Runs on a CPU (about an hour of two
# cores); set DEVICE=cuda to train on a GPU. The result is copied here only with INSTALL=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
WORK=${1:-$REPO/runs/unet-default-build}
DATA=${2:-$REPO/../shared/data}
DEVICE=${DEVICE:-cpu}
TS=$WORK/trainset
cd "$REPO"

# 1. training set: synthetic spheroids (generator seed 0) + the real 3D samples, rescaled;
#    held out (split test): ovule crop 1136 and the synthetic wells of generator seed 1
if [[ ! -f $TS/manifest.json ]]; then
    spheroid trainset from-synth "$TS" -c configs/trainset-unet-default.yaml
    spheroid trainset from-samples "$TS" -c configs/trainset-unet-default.yaml --data "$DATA"
    spheroid trainset from-synth "$TS" -c configs/trainset-unet-default-heldout.yaml
fi
spheroid trainset info "$TS"

# 2. training (resumes if interrupted; `nice` leaves the machine usable)
nice -n 10 spheroid train -c configs/train-unet-default.yaml --trainset "$TS" --out "$WORK/run" --device "$DEVICE"

# 3. held-out scores into the model card
spheroid test-model "$WORK/run/model" --trainset "$TS" --split test --update-card

if [[ ${INSTALL:-0} == 1 ]]; then
    cp "$WORK/run/model/weights.pt" "$WORK/run/model/model.json" "$WORK/run/model/MODEL.md" "$HERE/"
    echo "installed the model into $HERE"
fi
