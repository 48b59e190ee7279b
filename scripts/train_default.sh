#!/usr/bin/env bash
# The exact commands that produced the shipped default model (models/default/) and the accuracy numbers
# in docs/training.md. CPU only; each run takes minutes (see the timings in docs/training.md).
#
#   scripts/train_default.sh [DATA_ROOT]          # default: $AV_SNN_DATA_ROOT or ../shared/data
#   STAGES="noisy" scripts/train_default.sh       # only some stages: default, noisy, eval, report
#   NOISY_EPOCHS=30 STAGES=noisy scripts/train_default.sh   # one round of the noisy comparison
#   NOISY_SEEDS="1 2" NOISY_EPOCHS=30 NOISY_MODELS="misnet concat visual" STAGES=noisy scripts/train_default.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DATA=${1:-${AV_SNN_DATA_ROOT:-../shared/data}}
STAGES=${STAGES:-"default noisy eval report"}
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
  #    the two unimodal baselines (training noise redrawn every epoch; val/test use the fixed protocol),
  #    once with the shipped model's 12 epochs and once with 30. NOISY_SEEDS repeats it with other seeds
  #    (seed 0 -> runs/noisy30_*, seed s -> runs/noisy30s<s>_*); NOISY_MODELS picks the models.
  for seed in ${NOISY_SEEDS:-0}; do
    for epochs in ${NOISY_EPOCHS:-12 30}; do
      tag=noisy; [[ "$epochs" == 12 ]] || tag="noisy$epochs"; [[ "$seed" == 0 ]] || tag="${tag}s$seed"
      for model in ${NOISY_MODELS:-misnet concat audio visual}; do
        av_snn train --recipe "training/recipes/digits_${model}_tiny.yaml" --data-root "$DATA" \
          protocol=noisy epochs="$epochs" seed="$seed" out_dir="runs/${tag}_${model}_tiny" \
          card_name="av_digits_${tag}_${model}_tiny"
      done
    done
  done
fi

if has_stage report; then
  # The comparison table of docs/training.md, with exact McNemar tests on the paired test predictions.
  "$PY" - <<'PYEOF'
import json
from pathlib import Path
from scipy.stats import binomtest
for run in sorted(Path('runs').glob('noisy*_misnet_tiny')):
    tag = run.name[:-len('_misnet_tiny')]
    metrics, correct = {}, {}
    for model in ('misnet', 'concat', 'audio', 'visual'):
        folder = Path('runs') / f'{tag}_{model}_tiny'
        if not (folder / 'metrics.json').is_file():
            continue
        m = json.loads((folder / 'metrics.json').read_text())
        metrics[model] = m
        samples = json.loads((folder / 'test_predictions.json').read_text())['samples']
        correct[model] = {(s['audio_file'], s['image_index']): s['label'] == s['prediction'] for s in samples}
        print(f'{tag:8s} {model:7s} epochs {m["config"]["epochs"]:3d}  val {100 * m["best"]["val_accuracy"]:5.1f}'
              f'  test {100 * m["test"]["accuracy"]:5.1f}')
    for a, b in (('misnet', 'visual'), ('misnet', 'concat'), ('concat', 'visual')):
        if a in correct and b in correct:
            only_a = sum(correct[a][k] and not correct[b][k] for k in correct[a])
            only_b = sum(correct[b][k] and not correct[a][k] for k in correct[a])
            p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
            print(f'{tag:8s} {a} vs {b}: right only by {a} {only_a}, only by {b} {only_b}, McNemar p = {p:.2f}')
# Across seeds (runs/noisy30_* is seed 0, runs/noisy30s<s>_* seed s): mean and spread per model, and the
# per-seed differences of the paired comparisons (same 500 test windows in every seed).
import re
import statistics
acc = {}
for folder in Path('runs').glob('noisy30*_*_tiny'):
    m = re.fullmatch(r'noisy30(?:s(\d+))?_(\w+?)_tiny', folder.name)
    if m and (folder / 'metrics.json').is_file():
        seed = int(m.group(1) or 0)
        acc.setdefault(m.group(2), {})[seed] = json.loads((folder / 'metrics.json').read_text())['test']['accuracy']
if any(len(v) > 1 for v in acc.values()):
    print('30 epochs across seeds (test accuracy, %):')
    for model, by_seed in sorted(acc.items()):
        vals = [100 * by_seed[s] for s in sorted(by_seed)]
        sd = statistics.stdev(vals) if len(vals) > 1 else float('nan')
        print(f'  {model:7s} seeds {sorted(by_seed)}: ' + ', '.join(f'{v:.1f}' for v in vals)
              + f'  mean {statistics.mean(vals):.1f} sd {sd:.1f}')
    for a, b in (('misnet', 'visual'), ('misnet', 'concat'), ('concat', 'visual')):
        seeds = sorted(set(acc.get(a, {})) & set(acc.get(b, {})))
        if seeds:
            diffs = [100 * (acc[a][s] - acc[b][s]) for s in seeds]
            print(f'  {a} - {b} per seed {seeds}: ' + ', '.join(f'{d:+.1f}' for d in diffs)
                  + f'  mean {statistics.mean(diffs):+.1f} points')
PYEOF
fi

if has_stage eval; then
  # 3. The shipped model through `av-snn eval` (the sample lists the rosbag replay checks against).
  av_snn eval --data-root "$DATA" --json runs/eval_default_clean.json
  av_snn eval --data-root "$DATA" --protocol noisy --json runs/eval_default_noisy.json
fi
