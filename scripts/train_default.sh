#!/usr/bin/env bash
# The exact commands that produced the shipped default model (models/default/) and the accuracy numbers
# in docs/training.md. CPU only; each run takes minutes (see the timings in docs/training.md).
#
#   scripts/train_default.sh [DATA_ROOT]          # default: $AV_SNN_DATA_ROOT or ../shared/data
#   STAGES="noisy" scripts/train_default.sh       # only some stages: default, noisy, eval
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DATA=${1:-${AV_SNN_DATA_ROOT:-../shared/data}}
STAGES=${STAGES:-"default noisy eval"}
export PYTHONPATH=".:training${PYTHONPATH:+:$PYTHONPATH}"   # the checkout's code, not an older install
av_snn() { "$PY" -m av_snn_ros.cli "$@"; }
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

if has_stage default; then
  # 1. The default model: misnet_tiny, clean protocol, theo held out. Its card (weights, ONNX, card.yaml,
  #    MODEL_CARD.md) becomes models/default/.
  av_snn train --recipe training/recipes/digits_misnet_tiny.yaml --data-root "$DATA"
  mkdir -p models/default
  cp runs/digits_misnet_tiny/card/{card.yaml,model.pt,model.onnx,MODEL_CARD.md} models/default/
  cp runs/digits_misnet_tiny/{curves.png,confusion.png} models/default/
fi

if has_stage noisy; then
  # 2. The noisy-protocol comparison: the same recipe and split for MISNet, the concat baseline and
  #    the two unimodal baselines (training noise redrawn every epoch; val/test use the fixed protocol).
  for model in misnet concat audio visual; do
    av_snn train --recipe "training/recipes/digits_${model}_tiny.yaml" --data-root "$DATA" \
      protocol=noisy out_dir="runs/noisy_${model}_tiny" card_name="av_digits_noisy_${model}_tiny"
  done
fi

if has_stage eval; then
  # 3. The shipped model through `av-snn eval` (the sample lists the rosbag replay checks against).
  av_snn eval --data-root "$DATA" --json runs/eval_default_clean.json
  av_snn eval --data-root "$DATA" --protocol noisy --json runs/eval_default_noisy.json
fi
