#!/usr/bin/env bash
# The exact commands behind the emotion model (models/emotion/) and its numbers in docs/training.md and
# models/emotion/MODEL_CARD.md. CPU only. RAVDESS is CC BY-NC-SA 4.0: the model is non-commercial.
#
#   scripts/train_emotion.sh [DATA_ROOT]            # default: $AV_SNN_DATA_ROOT or ../shared/data
#   STAGES="window" scripts/train_emotion.sh        # only some stages: probe, window, snn, cnn, ship
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DATA=${1:-${AV_SNN_DATA_ROOT:-../shared/data}}
STAGES=${STAGES:-"probe window snn cnn ship"}
export PYTHONPATH=".:training${PYTHONPATH:+:$PYTHONPATH}"
av_snn() { "$PY" -m av_snn_ros.cli "$@"; }
has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

if has_stage probe; then
  # 1a. Window length, model-free: log-mel statistics + logistic regression, validation actors only.
  "$PY" scripts/emotion_window_probe.py --data-root "$DATA" --windows 1 2 3 4
fi

if has_stage window; then
  # 1b. Window length with the model itself: the emotion recipe without augmentation, 5 epochs, compared
  #     on the validation actors (17, 18) only.
  for w in 1.0 2.0 3.0; do
    av_snn train --recipe training/recipes/emotion_snn.yaml --data-root "$DATA" augment=null epochs=5 \
      warmup_epochs=0 torch_threads=1 "preprocessing={window_s: $w, timesteps: 4}" out_dir="runs/emotion_window_$w"
  done
fi

if has_stage snn; then
  # 2. The shipped model (robustness on, 16 epochs, 4 cached augmentation draws). The shipped card came
  #    from exactly this recipe (run with out_dir=runs/emotion_snn16).
  av_snn train --recipe training/recipes/emotion_snn.yaml --data-root "$DATA" ${SNN_OVERRIDES:-}
fi

if has_stage cnn; then
  # 3. The non-spiking comparison: same recipe, front end and split.
  av_snn train --recipe training/recipes/emotion_cnn.yaml --data-root "$DATA" ${CNN_OVERRIDES:-}
fi

if has_stage ship; then
  # 4. Ship: card -> models/emotion, test-actor evaluation with every condition, report.
  rm -rf models/emotion && mkdir -p models/emotion
  cp runs/emotion_snn/card/{card.yaml,model.pt,model.onnx} models/emotion/
  cp runs/emotion_snn/curves.png models/emotion/
  av_snn eval --data-root "$DATA" --card models/emotion --speakers 19 20 --conditions all \
    --json runs/eval_emotion_test.json
  av_snn eval --data-root "$DATA" --card runs/emotion_cnn/card --speakers 19 20 \
    --conditions clean noisy idle_silence_black idle_room_grey idle_noise late_onset --json runs/eval_emotion_cnn_test.json
  "$PY" -m av_snn_training.emotion_report --card models/emotion --eval runs/eval_emotion_test.json \
    --metrics runs/emotion_snn/metrics.json --cnn-eval runs/eval_emotion_cnn_test.json \
    --cnn-metrics runs/emotion_cnn/metrics.json \
    --window-runs runs/emotion_window_1.0 runs/emotion_window_2.0 runs/emotion_window_3.0
  cp runs/eval_emotion_test.conditions.png models/emotion/conditions.png
fi
