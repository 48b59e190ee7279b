#!/usr/bin/env bash
# The checks that need a CUDA GPU, runnable on a GPU machine without ROS (a Jetson, a cloud GPU, a
# training box): the ROS-free tests, now with a GPU visible (training on `device: auto` runs on CUDA,
# the `gpu`-marked bench and TensorRT tests run instead of skipping), then `av-snn bench --cuda on`
# (CPU paths and GPU backends side by side) for the shipped card, MISNet-XS and S-CMRL at 128x128.
# TensorRT engines (builds, fp16/fp32 comparison, polygraphy) are scripts/jetson_check.sh's job.
#
# usage: scripts/gpu_check.sh [OUT_DIR]     (default gpu_check/; needs torch with CUDA, onnx,
#        onnxruntime, onnxscript, spikingjelly, pyyaml, scipy, tqdm, matplotlib, psutil, pytest, pytest-timeout;
#        TensorRT's Python bindings for the TensorRT parts; the AV digits data via AV_SNN_DATA_ROOT)
# Writes OUT_DIR/pytest.log, pytest.xml, bench.json, bench.log; exits non-zero if a step failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT:$ROOT/training${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
"$PY" - <<'PY' || exit 1
import torch
if not torch.cuda.is_available():
    raise SystemExit(f'gpu_check: torch {torch.__version__} sees no CUDA device (CUDA {torch.version.cuda})')
p = torch.cuda.get_device_properties(0)
print(f'gpu_check: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, '
      f'CUDA {torch.version.cuda}')
PY
status=0
# every test file that needs no ROS graph
tests=()
for name in av_digits backends bench calibration ddp energy engine_cache export models native_kernels neurons onnx_checks \
            paper_datasets preprocessing tensorrt_backend training windowing; do tests+=("tests/test_$name.py"); done
"$PY" -m pytest -q -rfEs "${tests[@]}" --junitxml "$OUT/pytest.xml" \
    2>&1 | sed "s|^|[pytest] |" | tee "$OUT/pytest.log" || status=1
"$PY" -m av_snn_ros bench --json "$OUT/bench.json" --no-node --cuda on --model misnet_xs --model scmrl \
    2>&1 | tee "$OUT/bench.log" || status=1
exit $status
