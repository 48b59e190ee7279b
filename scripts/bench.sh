#!/usr/bin/env bash
# The standard benchmark set of docs/performance.md, run on this machine; JSON reports go to OUT_DIR.
# usage: scripts/bench.sh [OUT_DIR] [--quick]        (default OUT_DIR: bench-results)
# Runs from a checkout with the venv of scripts/install.sh (PYTHON overrides the interpreter).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-bench-results}"
QUICK="${2:-}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export PYTHONPATH="$ROOT:$ROOT/training${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
run() { echo "+ av-snn $*" >&2; "$PY" -m av_snn_ros.cli "$@"; }

# 1. The shipped default model (card) + MISNet-XS at 128x128, T=4, batch 1 + the node at real time.
run bench --json "$OUT/default.json" $QUICK
# 2. The default model's architecture on its own (also when no default card is shipped yet).
run bench --json "$OUT/misnet_tiny.json" --no-card --no-node --model misnet_tiny --input-size 32 $QUICK
# 3. S-CMRL, E=256, T=4, 128x128, batch 1: compared with the reference code only where a reference row
#    for this CPU exists (av_snn_ros/tools/reference_timings.yaml); otherwise "no reference measured on this CPU".
run bench --json "$OUT/scmrl.json" --no-card --no-node --model scmrl --input-size 128 $QUICK
# 4. Soak: >= 10 minutes of data through the node, faster than real time; RSS growth after warm-up.
if [ -z "$QUICK" ]; then
  echo "+ scripts/soak.py --minutes 10" >&2
  "$PY" "$ROOT/scripts/soak.py" --minutes 10 --json "$OUT/soak.json"
fi
echo "reports in $OUT/" >&2
