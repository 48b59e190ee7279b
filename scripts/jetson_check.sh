#!/usr/bin/env bash
# One-command TensorRT check for a Jetson (or any CUDA machine) with the project's venv.
#
# Prints the JetPack / L4T, CUDA, TensorRT, GPU and torch versions; checks the model's ONNX for
# TensorRT; builds the engine for the model card in fp16 and fp32 (timing the builds); runs the
# `gpu`-marked tests; compares torch vs onnxruntime vs TensorRT on real windows with the documented
# tolerances (av_snn_ros.parity.DEFAULT_TOLERANCES) plus an independent `polygraphy run --trt
# --onnxrt`; and times warm-up and per-window latency of each engine. Every number printed is measured
# on this machine in this run.
#
# usage: scripts/jetson_check.sh [--card CARD.yaml] [--iterations N] [--out DIR] [--skip-tests]
#   --card        model card (default: the shipped default card; if absent, an untrained misnet_tiny
#                 card is exported into the output folder so the pipeline can still be checked)
#   --iterations  timed windows per engine (default 200)
#   --out         folder for the report (jetson_check.json), engines and logs (default: a new temp dir)
#   --skip-tests  do not run the gpu-marked pytest tests
# env: PYTHON (default .venv/bin/python), AV_SNN_DATA_ROOT (real data for the comparison and tests)
#
# exit codes: 0 all checks passed; 1 a check failed; 2 bad usage;
#             3 TensorRT is not importable here; 4 no CUDA device visible to torch
set -uo pipefail

EXIT_FAIL=1
EXIT_USAGE=2
EXIT_NO_TENSORRT=3
EXIT_NO_CUDA=4

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CARD=""
ITERATIONS=200
OUT=""
SKIP_TESTS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --card) CARD="${2:?--card needs a path}"; shift 2 ;;
    --iterations) ITERATIONS="${2:?--iterations needs a number}"; shift 2 ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --skip-tests) SKIP_TESTS=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit $EXIT_USAGE ;;
  esac
done
case "$ITERATIONS" in ''|*[!0-9]*) echo "--iterations must be a positive integer" >&2; exit $EXIT_USAGE ;; esac
[ -x "$PY" ] || { echo "no Python at $PY: run scripts/install.sh or set PYTHON" >&2; exit $EXIT_USAGE; }
OUT="${OUT:-$(mktemp -d -t av_snn_jetson_check.XXXXXX)}"
mkdir -p "$OUT"
export AV_SNN_ENGINE_CACHE="$OUT/engines"     # fresh cache: the builds below are really timed
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

FAILURES=()
section() { printf '\n=== %s ===\n' "$*"; }
fail() { FAILURES+=("$1"); printf 'FAIL: %s\n' "$1"; }

section "versions"
if [ -f /etc/nv_tegra_release ]; then
  echo "L4T: $(head -n1 /etc/nv_tegra_release)"
else
  echo "L4T: not a Jetson (/etc/nv_tegra_release absent)"
fi
if command -v dpkg-query >/dev/null && dpkg-query -W -f='${Version}' nvidia-jetpack >/dev/null 2>&1; then
  echo "JetPack: $(dpkg-query -W -f='${Version}' nvidia-jetpack)"
else
  echo "JetPack: nvidia-jetpack package not installed"
fi
if command -v nvcc >/dev/null; then
  echo "nvcc: $(nvcc --version | tail -n1)"
fi
if command -v nvidia-smi >/dev/null; then
  echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)"
fi
"$PY" - <<'EOF'
import platform
print(f'python: {platform.python_version()} ({platform.machine()})')
try:
    import torch
    print(f'torch: {torch.__version__} (CUDA {torch.version.cuda or "not compiled in"}, '
          f'cuda available: {torch.cuda.is_available()})')
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        print(f'GPU: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB')
except ImportError as exc:
    print(f'torch: not importable ({exc})')
for name in ('tensorrt', 'onnxruntime', 'onnx', 'polygraphy'):
    try:
        module = __import__(name)
        print(f'{name}: {module.__version__}')
    except Exception as exc:
        print(f'{name}: not importable ({exc})')
EOF

if ! "$PY" -c 'import tensorrt' 2>/dev/null; then
  echo
  echo "TensorRT is not importable by $PY: nothing to check on this machine."
  echo "On a Jetson, TensorRT comes with JetPack; see docs/jetson.md to make it visible to the venv."
  exit $EXIT_NO_TENSORRT
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo
  echo "No CUDA device visible to torch: the TensorRT backend needs a CUDA-enabled torch (docs/jetson.md)."
  exit $EXIT_NO_CUDA
fi

section "model card"
if [ -z "$CARD" ]; then
  CARD="$("$PY" -c 'from av_snn_ros.paths import default_model_card as d; p = d(); print(p if p.is_file() else "")')"
fi
if [ -z "$CARD" ]; then
  echo "no default model card shipped: exporting an untrained misnet_tiny card into $OUT/card"
  "$PY" -m av_snn_ros.cli export --model misnet_tiny --out "$OUT/card" || { fail "export of misnet_tiny"; }
  CARD="$OUT/card/card.yaml"
fi
echo "card: $CARD"
[ -f "$CARD" ] || { fail "model card $CARD not found"; printf '\n%d check(s) failed\n' "${#FAILURES[@]}"; exit $EXIT_FAIL; }
ONNX="$("$PY" -c "from av_snn_ros.model_card import ModelCard; print(ModelCard.load('$CARD').verified_onnx())")" \
  || { fail "card $CARD has no valid ONNX export (run av-snn export --card $CARD)"; exit $EXIT_FAIL; }
echo "onnx: $ONNX"

section "ONNX hygiene for TensorRT"
"$PY" -m av_snn_ros.tools.onnx_checks "$ONNX" || fail "ONNX check"

section "engine builds, runtime comparison, warm-up and latency"
"$PY" - "$CARD" "$OUT" "$ITERATIONS" <<'EOF' || fail "engine build / comparison / latency (see above)"
import json, statistics, sys, time
from pathlib import Path

import numpy as np

from av_snn_ros.backends import tensorrt_backend as tb
from av_snn_ros.backends.base import create_backend
from av_snn_ros.contract import input_shapes as expected_shapes
from av_snn_ros.model_card import ModelCard
from av_snn_ros.parity import compare_runtimes
from av_snn_ros.paths import default_data_root

card_path, out, iterations = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
card = ModelCard.load(card_path)
report = {'card': card_path, 'engines': {}, 'latency_ms': {}}
ok = True

for precision in ('fp16', 'fp32'):
    start = time.perf_counter()
    path = tb.build_engine_from_card(card, enable_fp16=(precision == 'fp16'))
    seconds = time.perf_counter() - start
    report['engines'][precision] = {'path': str(path), 'build_seconds': round(seconds, 2),
                                    'bytes': path.stat().st_size}
    print(f'{precision} engine: {path} ({path.stat().st_size / 1e6:.2f} MB), build {seconds:.1f} s')

root = default_data_root()
if root is not None and (Path(root) / 'mnist' / 'mnist.npz').is_file():
    from av_snn_ros.tools.export import real_window
    audio, visual = real_window(card.preprocessing, root, batch=10)   # digits 0..9, one window each
    what = f'10 real windows from {root}'
else:
    rng = np.random.default_rng(0)
    a_shape, v_shape = expected_shapes(card.preprocessing, 10)
    audio, visual = (rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(v_shape).astype(np.float32))
    what = '10 random windows (no data root: set AV_SNN_DATA_ROOT for real ones)'
comparison = compare_runtimes(card.verified_onnx(), card, [(audio, visual)])
print(f'comparison on {what}:')
print(comparison.summary())
report['comparison'] = {'inputs': what, **comparison.to_dict()}
ok &= comparison.passed and all(r.ran for r in comparison.results)


def timed(backend, label):
    one_a, one_v = audio[:, :1], visual[:, :1]
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        backend.infer(one_a, one_v)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    stats = {'median': statistics.median(times), 'p90': times[int(0.9 * (len(times) - 1))],
             'p99': times[int(0.99 * (len(times) - 1))], 'max': times[-1], 'windows': iterations}
    report['latency_ms'][label] = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
    scope = ' (host->device copy, execution, device->host copy)' if label.startswith('tensorrt') else ''
    print(f'{label}: per-window latency median {stats["median"]:.3f} ms, p90 {stats["p90"]:.3f} ms, '
          f'p99 {stats["p99"]:.3f} ms, max {stats["max"]:.3f} ms over {iterations} windows{scope}')


for precision in ('fp16', 'fp32'):
    start = time.perf_counter()
    choice = create_backend('tensorrt', card, enable_fp16=(precision == 'fp16'))
    ready = time.perf_counter() - start
    info = choice.backend.info
    print(f'tensorrt {precision}: ready in {ready:.2f} s (engine cache {info["engine_cache"]}, '
          f'warm-up {info["warmup_seconds"]:.3f} s for {info["warmup_iterations"]} passes)')
    report['engines'][precision].update({'load_and_warmup_seconds': round(ready, 3),
                                         'warmup_seconds': info['warmup_seconds']})
    timed(choice.backend, f'tensorrt_{precision}')
    choice.backend.close()
ort = create_backend('onnxruntime', card).backend
timed(ort, 'onnxruntime_cpu')   # same machine, for scale

(out / 'jetson_check.json').write_text(json.dumps(report, indent=2) + '\n')
print(f'report: {out / "jetson_check.json"}')
sys.exit(0 if ok else 1)
EOF

section "polygraphy: TensorRT vs onnxruntime (independent of our code)"
if "$PY" -c 'import polygraphy' 2>/dev/null; then
  # random inputs in the range of normalised features; fp32 must match (TF32 off, polygraphy's default)
  "$PY" -m polygraphy run "$ONNX" --trt --onnxrt --atol 1e-4 --rtol 0 \
      --val-range 'audio:[-3,3]' 'visual:[-1,1]' --iterations 5 >"$OUT/polygraphy_fp32.log" 2>&1 \
    && echo "polygraphy fp32: PASSED" || { tail -n 25 "$OUT/polygraphy_fp32.log"; fail "polygraphy fp32 (log: $OUT/polygraphy_fp32.log)"; }
  # fp16 is informational: elementwise bounds on spiking outputs are not the criterion (argmax is, above)
  "$PY" -m polygraphy run "$ONNX" --trt --fp16 --onnxrt --atol 1e-2 --rtol 1e-2 \
      --val-range 'audio:[-3,3]' 'visual:[-1,1]' --iterations 5 >"$OUT/polygraphy_fp16.log" 2>&1 \
    && echo "polygraphy fp16: PASSED" || echo "polygraphy fp16: outside 1e-2 on random inputs (informational; log: $OUT/polygraphy_fp16.log)"
else
  fail "polygraphy is not installed in the venv"
fi

if [ "$SKIP_TESTS" = 0 ]; then
  section "gpu-marked tests"
  "$PY" -m pytest -q -rs -m gpu --junitxml="$OUT/gpu_tests.xml" tests/test_tensorrt_backend.py tests/test_onnx_checks.py \
    || fail "gpu-marked tests"
  # a skipped gpu test on a GPU machine means the check did not happen (e.g. no real data): a failure here
  "$PY" - "$OUT/gpu_tests.xml" <<'EOF' || fail "gpu-marked tests were skipped or none ran (see the skip reasons above)"
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
ran, skipped = int(suite.get('tests', 0)), int(suite.get('skipped', 0))
print(f'gpu tests: {ran} collected, {skipped} skipped')
sys.exit(0 if ran > 0 and skipped == 0 else 1)
EOF
fi

section "summary"
echo "output folder: $OUT"
if [ ${#FAILURES[@]} -gt 0 ]; then
  printf '%d check(s) failed:\n' "${#FAILURES[@]}"
  printf '  - %s\n' "${FAILURES[@]}"
  exit $EXIT_FAIL
fi
echo "all checks passed"
exit 0
