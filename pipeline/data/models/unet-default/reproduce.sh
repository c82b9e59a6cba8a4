#!/usr/bin/env bash
# Rebuild the default U-Net shipped in this folder (weights.pt + model.json).
#
#   pipeline/data/models/unet-default/reproduce.sh [WORKDIR] [DATA]
#
# WORKDIR (default runs/unet-default-build) receives the training sets and the runs; DATA is the
# folder of public samples (default ../shared/data). Three stages, each resumable:
#   1. configs/train-unet-default.yaml: 4,000 steps on default-settings synthetic spheroids and the
#      real samples (group normalisation);
#   2. configs/train-unet-default-varied.yaml: stage 1 fine-tuned 3,000 steps on spheroids whose
#      render settings vary (configs/trainset-unet-varied.yaml);
#   3. configs/train-unet-default-batchnorm.yaml: stage 2 carried over into batch normalisation
#      (output independent of the tiling) and trained 6,000 steps more on the same set.
# About an hour of two idle CPU cores in all; set DEVICE=cuda to train on a GPU. The result is
# copied here only with INSTALL=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
WORK=${1:-$REPO/runs/unet-default-build}
DATA=${2:-$REPO/../shared/data}
DEVICE=${DEVICE:-cpu}
TS1=$WORK/trainset-default
TS2=$WORK/trainset-varied
cd "$REPO"

# training sets; held out (split test): ovule crop 1136, the synthetic wells of generator seed 1
# (stage 1) and the held-out-settings wells (stages 2-3)
if [[ ! -f $TS1/manifest.json ]]; then
    spheroid trainset from-synth "$TS1" -c configs/trainset-unet-default.yaml
    spheroid trainset from-samples "$TS1" -c configs/trainset-unet-default.yaml --data "$DATA"
    spheroid trainset from-synth "$TS1" -c configs/trainset-unet-default-heldout.yaml
fi
if [[ ! -f $TS2/manifest.json ]]; then
    spheroid trainset from-synth "$TS2" -c configs/trainset-unet-varied.yaml
    spheroid trainset from-samples "$TS2" -c configs/trainset-unet-varied.yaml --data "$DATA"
    spheroid trainset from-synth "$TS2" -c configs/trainset-unet-heldout-settings.yaml
fi
spheroid trainset info "$TS2"

# training (each stage resumes if interrupted; `nice` leaves the machine usable)
nice -n 10 spheroid train -c configs/train-unet-default.yaml --trainset "$TS1" --out "$WORK/stage1" --device "$DEVICE"
nice -n 10 spheroid train -c configs/train-unet-default-varied.yaml --trainset "$TS2" --out "$WORK/stage2" \
    --init-from "$WORK/stage1/model" --device "$DEVICE"
nice -n 10 spheroid train -c configs/train-unet-default-batchnorm.yaml --trainset "$TS2" --out "$WORK/stage3" \
    --init-from "$WORK/stage2/model" --device "$DEVICE"

# held-out scores into the model card
spheroid test-model "$WORK/stage3/model" --trainset "$TS2" --split test --update-card

if [[ ${INSTALL:-0} == 1 ]]; then
    cp "$WORK/stage3/model/weights.pt" "$WORK/stage3/model/model.json" "$WORK/stage3/model/MODEL.md" "$HERE/"
    echo "installed the model into $HERE"
fi
