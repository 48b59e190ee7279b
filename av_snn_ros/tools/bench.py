"""``av-snn bench``: side-by-side speed of the inference paths and of the real node, in one run.

For the shipped default model (or ``--card``) and for registered models (default: MISNet-XS at
128x128, T = 4, batch 1) it measures on this machine, interleaved so every path sees the same load:

- per-window latency p50/p95/p99 of eager torch (the model computing as in training, under
  ``torch.inference_mode`` and :func:`~av_snn_ros.models.neurons.reference_paths`: spikingjelly's
  per-step charge/fire/reset, batch norm after each convolution, NCHW), of the optimised torch paths
  (``torch_fast``: what the node's torch backend runs, fused multi-step neurons, BN folded into the
  convolutions, channels-last; ``torch_native``: the same backend with its native kernels, event-driven
  spiking convolutions and one-pass neurons compiled from C; ``torch.compile`` when asked), and of
  onnxruntime (the card's export, or a fresh export for a registry model); speed-up ratios vs eager;
- output agreement with eager torch (argmax equal, max abs diff over the three outputs);
- FLOPs of one call (``torch.utils.flop_counter``: convolutions and matmuls) and the achieved fraction
  of this machine's fp32 GEMM throughput, measured in the same run;
- where the time goes: per-stage (conv / batchnorm / neuron / pool / ...) and top aten ops;
- the node end to end: AV-digits data replayed at real time (camera 30 fps, audio 16 kHz) through the
  real classifier node process, reported like ros2_benchmark (output rate at a fixed input rate,
  missed windows, latency p50/p99 and jitter, node CPU %).

Nothing here asserts a speed: the JSON holds the numbers, the targets and whether each was met.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# torch's OpenMP threads spin after each parallel region by default. On shared cores that made 2-thread
# eager torch 10-50x slower and, in this one process, stole CPU from the path timed next (see
# docs/performance.md). libgomp reads the policy when torch loads, so it is set here, before the import
# below; an explicit OMP_WAIT_POLICY in the environment wins and is recorded in the report.
_OMP_POLICY_PRESET = 'OMP_WAIT_POLICY' in os.environ
_TORCH_PRELOADED = 'torch' in sys.modules
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from . import node_bench, profiling  # noqa: E402  (after the OpenMP policy)
from ..parity import agreement  # noqa: E402
from ..timing import time_interleaved  # noqa: E402
from .cpu_identity import (NO_REFERENCE, CpuIdentity, cpu_identity, load_reference_timings,  # noqa: E402
                           reference_for)

DEFAULT_MODELS = ('misnet_xs',)
DEFAULT_INPUT_SIZE = 128
DEFAULT_TIMESTEPS = 4
DEFAULT_BATCH = 1
DEFAULT_THREADS = 2              # the node's CPU budget on the reference robot computer
MIN_TIME_S = 6.0                 # interleaved timing budget per model (all paths together)
QUICK_MIN_TIME_S = 1.0
MIN_ROUNDS, QUICK_MIN_ROUNDS = 10, 3
PROFILE_ITERATIONS, QUICK_PROFILE_ITERATIONS = 3, 1
GEMM_REPEATS, QUICK_GEMM_REPEATS = 10, 3    # products per GEMM measurement (the best one counts)
CALIBRATION_PASSES = 3           # BN statistics passes for an untrained registry model
CALIBRATION_NOISE = 0.1          # std of the noise added to the bench input for those passes
SCMRL_FAMILY = 'scmrl'
SPEEDUP_TARGET = 3.0             # optimised backend vs eager torch; S-CMRL vs its reference
NODE_FALLBACK_MODEL = 'misnet_tiny'   # the default model's architecture, when no card is shipped yet
NODE_FALLBACK_SIZE = 32
EAGER = 'torch_eager'           # reference maths (training-time computations)
FAST = 'torch_fast'             # the torch backend as the node runs it (inference fast paths)
NATIVE = 'torch_native'         # the torch backend with native_kernels (event-driven convs, one-pass neurons)
COMPILED = 'torch_compile'
ORT = 'onnxruntime'
ORT_NOSPIN = 'onnxruntime_nospin'     # same session, intra-op threads sleep instead of spinning
TORCH_CUDA = 'torch_cuda'       # the torch backend on the GPU as the node runs it (CUDA graph replay)
TORCH_CUDA_EAGER = 'torch_cuda_eager'   # the same without the CUDA graph: one Python launch per kernel
TENSORRT = 'tensorrt'           # the TensorRT backend (engine from the card's ONNX, fp16 by default)
#: paths that run on a GPU: reported beside the CPU paths, never counted for the CPU speed-up target
GPU_PATHS = (TORCH_CUDA, TORCH_CUDA_EAGER, TENSORRT)
CUDA_MODES = ('auto', 'on', 'off')


@dataclass
class Target:
    """One model to bench: its card (the backends load it) and one real input batch."""

    label: str
    source: str                       # 'card' or 'registry'
    card: Any                         # ModelCard
    audio: np.ndarray                 # (T, B, 1, Ha, Wa)
    visual: np.ndarray                # (T, B, C, Hv, Wv)
    input_kind: str                   # 'real' (AV digits window) or 'random'
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ machine

def machine_info() -> dict:
    """CPU, cores, load and library versions: the context every number in the report needs."""
    import torch
    cpu = cpu_identity()
    info: dict[str, Any] = {
        'platform': platform.platform(), 'python': platform.python_version(), 'torch': torch.__version__,
        'cpu_count_logical': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
        'cpu': cpu.as_dict(), 'cpu_model': cpu.model_name, 'loadavg_1_5_15': list(os.getloadavg()),
    }
    try:
        import onnxruntime
        info['onnxruntime'] = onnxruntime.__version__
    except ImportError:
        info['onnxruntime'] = None
    try:
        import psutil
        info['cpu_count_physical'] = psutil.cpu_count(logical=False)
        info['memory_gb'] = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info['gpu'] = {'name': props.name, 'compute_capability': f'{props.major}.{props.minor}',
                       'memory_gb': round(props.total_memory / 2 ** 30, 1), 'cuda': torch.version.cuda}
    return info


# ------------------------------------------------------------------------------------------ targets

def _inputs(pre_cfg, batch: int, data_root: Path | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Real AV-digits windows through the shared preprocessing when the data is there, else seeded noise."""
    if data_root is not None:
        from .export import real_window
        audio, visual = real_window(pre_cfg, data_root, batch)
        return audio, visual, 'real'
    from ..contract import input_shapes
    rng = np.random.default_rng(seed)
    a_shape, v_shape = input_shapes(pre_cfg, batch)
    return (rng.standard_normal(a_shape).astype(np.float32),
            rng.standard_normal(v_shape).astype(np.float32), 'random')


def _calibrate_batchnorm(model, audio: np.ndarray, visual: np.ndarray, passes: int = CALIBRATION_PASSES) -> None:
    """Give an untrained model data-driven BN statistics so spikes reach the head.

    With default initialisation the spikes of a fresh SNN die out before the head (all logits 0), which
    would make the agreement check vacuous. The model zoo's calibration averages the statistics over
    ``passes`` batches: the bench input plus small seeded noise.
    """
    import torch

    from ..models.blocks import calibrate_batchnorm
    gen = torch.Generator().manual_seed(0)
    a, v = torch.from_numpy(audio), torch.from_numpy(visual)
    batches = [(a + CALIBRATION_NOISE * torch.randn(a.shape, generator=gen),
                v + CALIBRATION_NOISE * torch.randn(v.shape, generator=gen)) for _ in range(passes)]
    calibrate_batchnorm(model, batches)


def card_target(card_path: Path, batch: int, data_root: Path | None) -> Target:
    """A model card as shipped: its weights, its ONNX export and its preprocessing."""
    from ..model_card import ModelCard
    card = ModelCard.load(card_path)
    audio, visual, kind = _inputs(card.preprocessing, batch, data_root)
    return Target(label=f'card:{card.name}', source='card', card=card, audio=audio, visual=visual,
                  input_kind=kind)


def registry_target(name: str, input_size: int, timesteps: int, batch: int, data_root: Path | None,
                    workdir: Path) -> Target:
    """A registered model at the given geometry, BN-calibrated, written as a card (weights + ONNX)."""
    from .export import preprocess_config_for, write_model_card
    from ..model_card import ModelCard
    from ..models.registry import create_model
    overrides = {'input_size': [input_size, input_size], 'timesteps': timesteps}
    model = create_model(name, **overrides)
    pre_cfg = preprocess_config_for(model)
    audio, visual, kind = _inputs(pre_cfg, batch, data_root)
    _calibrate_batchnorm(model, audio, visual)
    k = model.config.num_classes
    out_dir = workdir / f'{name}_{input_size}_t{timesteps}'
    card_path = write_model_card(name, out_dir, [f'class_{i}' for i in range(k)], pre_cfg,
                                 model_args=overrides, state_dict=model.state_dict(),
                                 extra={'description': 'av-snn bench: untrained, BN-calibrated'})
    card = ModelCard.load(card_path)
    target = Target(label=f'{name}@{input_size}x{input_size},T={timesteps},B={batch}', source='registry',
                    card=card, audio=audio, visual=visual, input_kind=kind)
    target.notes.append('untrained weights with batch-norm statistics calibrated on the bench input')
    return target


# ------------------------------------------------------------------------------------ inference paths

@dataclass
class InferencePath:
    """One inference path: a callable on the target's input returning the three outputs as numpy."""

    name: str
    run: Callable[[], tuple[np.ndarray, ...]]
    build_s: float
    info: dict = field(default_factory=dict)


def _torch_path(name: str, model, audio: np.ndarray, visual: np.ndarray, build_s: float, info: dict) -> InferencePath:
    import torch
    a, v = torch.from_numpy(audio), torch.from_numpy(visual)

    def run() -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            out = model(a, v)
        return tuple(t.numpy() for t in out)
    return InferencePath(name, run, build_s, info)


def _backend_path(name: str, backend, target: Target, build_s: float, reference: bool = False) -> InferencePath:
    """An inference path through a runtime backend (input checks and numpy conversion included).

    ``reference``: run the torch backend's model with its training-time computations
    (:func:`~av_snn_ros.models.neurons.reference_paths`), the eager baseline.
    """
    from ..models.neurons import reference_paths
    a, v = target.audio, target.visual

    def run() -> tuple[np.ndarray, ...]:
        with reference_paths() if reference else contextlib.nullcontext():
            res = backend.infer(a, v)
        return tuple(res.outputs().values())
    info = {k: v for k, v in backend.info.items() if k != 'fallback_from'}
    if reference:
        info['computations'] = 'reference (training-time): per-step neurons, conv then batch norm, NCHW'
    return InferencePath(name, run, build_s, {'backend': backend.name, **info})


#: each backend path the bench times: path name -> (backend, its options beyond the bench's thread
#: budget), validated by the backend's own options class; eager torch is the FAST backend's model run
#: with the training-time computations
BACKEND_PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    FAST: ('torch', {'device': 'cpu'}),                              # what the node runs on a CPU
    NATIVE: ('torch', {'device': 'cpu', 'native_kernels': True}),
    ORT: ('onnxruntime', {}),
    ORT_NOSPIN: ('onnxruntime', {'allow_spinning': False}),
    TORCH_CUDA: ('torch', {'device': 'cuda', 'cuda_graph': True}),
    TORCH_CUDA_EAGER: ('torch', {'device': 'cuda', 'cuda_graph': False}),
    TENSORRT: ('tensorrt', {}),
}


def path_options(path: str, threads: int) -> tuple[str, dict[str, Any]]:
    """``(backend, options)`` of bench path ``path``: its options plus the CPU thread budget where the
    backend takes one (a GPU path keeps the CPU paths' thread setting, as before)."""
    from ..backends.base import option_names
    backend, options = BACKEND_PATHS[path]
    if path not in GPU_PATHS and 'threads' in option_names()[backend]:
        options = {**options, 'threads': threads}
    return backend, options


def _build(path: str, target: Target, threads: int):
    """The backend of bench path ``path`` for the target's card, and the seconds it took to build."""
    from ..backends.base import create_backend
    t0 = time.perf_counter()
    backend, options = path_options(path, threads)
    built = create_backend(backend, target.card, **options).backend
    return built, time.perf_counter() - t0


def build_paths(target: Target, threads: int, compile_torch: bool,
                cuda: bool = False) -> tuple[dict[str, InferencePath], dict[str, str]]:
    """Eager torch, the torch fast paths, optionally ``torch.compile``, onnxruntime and (``cuda``) the GPU
    backends; skipped ones with reasons."""
    import torch
    from ..backends.base import BackendUnavailable
    paths: dict[str, InferencePath] = {}
    skipped: dict[str, str] = {}
    torch_backend, build_s = _build(FAST, target, threads)
    paths[EAGER] = _backend_path(EAGER, torch_backend, target, build_s, reference=True)
    paths[FAST] = _backend_path(FAST, torch_backend, target, build_s)
    model = torch_backend.model
    try:      # compiles the C kernels on first use (seconds, then cached)
        native, build_s = _build(NATIVE, target, threads)
        paths[NATIVE] = _backend_path(NATIVE, native, target, build_s)
    except BackendUnavailable as exc:   # no C compiler: reported, the rest still runs (a kernel bug is not)
        skipped[NATIVE] = ' '.join(f'{type(exc).__name__}: {exc}'.split())[:400]
    if compile_torch:
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(copy.deepcopy(model), dynamic=False)
            path = _torch_path(COMPILED, compiled, target.audio, target.visual, 0.0,
                               {'what': 'torch.compile(inductor, static shapes)'})
            path.run()                                  # compilation happens on the first call
            path.build_s = time.perf_counter() - t0
            paths[COMPILED] = path
        except Exception as exc:   # inductor needs a C++ toolchain; any failure is a reported skip
            skipped[COMPILED] = f'{type(exc).__name__}: {exc}'.splitlines()[0]
    else:
        skipped[COMPILED] = 'not requested (--compile)'
    for name in (ORT, ORT_NOSPIN):
        if name == ORT_NOSPIN and ORT in paths and threads == 1:
            skipped[ORT_NOSPIN] = 'one intra-op thread: nothing spins'
            continue
        if name == ORT_NOSPIN and ORT not in paths:
            continue
        try:
            backend, build_s = _build(name, target, threads)
            paths[name] = _backend_path(name, backend, target, build_s)
        except Exception as exc:   # BackendUnavailable, ModelFileError: reported, the rest still runs
            skipped[name] = f'{type(exc).__name__}: {exc}'
    if cuda:
        paths.update(_gpu_paths(target, skipped))
    else:
        for name in GPU_PATHS:
            skipped[name] = 'no CUDA device (torch.cuda.is_available() is False) or --cuda off'
    return paths, skipped


def _gpu_paths(target: Target, skipped: dict[str, str]) -> dict[str, InferencePath]:
    """The node's GPU backends: torch on CUDA and TensorRT (built from the card's ONNX, engine cached).

    Both hand numpy back, so every timed call includes the host-device copies and a synchronisation,
    as in the node. A backend that cannot be built is reported as skipped with its reason.
    """
    from ..backends.base import BackendUnavailable
    from ..model_card import ModelFileError
    paths: dict[str, InferencePath] = {}
    for name in (TORCH_CUDA, TORCH_CUDA_EAGER):
        t0 = time.perf_counter()
        backend, _ = _build(name, target, threads=1)
        backend.warmup(target.audio, target.visual)          # the graph is captured on the first call
        paths[name] = _backend_path(name, backend, target, time.perf_counter() - t0)
    try:
        backend, build_s = _build(TENSORRT, target, threads=1)   # builds or reuses the cached engine, warms up
        paths[TENSORRT] = _backend_path(TENSORRT, backend, target, build_s)
    except (BackendUnavailable, ModelFileError) as exc:
        skipped[TENSORRT] = f'{type(exc).__name__}: {exc}'
    return paths


# --------------------------------------------------------------------------------------------- bench

def bench_target(target: Target, threads: int, compile_torch: bool, quick: bool, cuda: bool = False) -> dict:
    """Every measurement for one model; returns its JSON section."""
    import torch
    paths, skipped = build_paths(target, threads, compile_torch, cuda)
    eager_model_inputs = (torch.from_numpy(target.audio), torch.from_numpy(target.visual))
    model = target.card.load_torch_model().eval()
    flops = profiling.count_flops(model, eager_model_inputs)
    outputs = {name: p.run() for name, p in paths.items()}
    heads = tuple(target.card.modality_heads)
    agree = {name: agreement(outputs[EAGER], out, heads) for name, out in outputs.items() if name != EAGER}
    stats = time_interleaved(
        {name: p.run for name, p in paths.items()}, warmup=1 if quick else 2,
        min_rounds=QUICK_MIN_ROUNDS if quick else MIN_ROUNDS,
        min_time_s=QUICK_MIN_TIME_S if quick else MIN_TIME_S)
    eager_p50 = stats[EAGER].p50_ms
    batch = int(target.audio.shape[1])
    section: dict[str, Any] = {
        'label': target.label, 'source': target.source, 'model': target.card.model,
        'card': str(target.card.path), 'input': {'kind': target.input_kind, 'audio_shape': list(target.audio.shape),
                                                 'visual_shape': list(target.visual.shape), 'batch': batch},
        'parameters': int(sum(p.numel() for p in model.parameters())),
        'flops_per_call': flops['total'], 'flops_by_op': flops['by_op'],
        'paths': {}, 'skipped': skipped, 'notes': list(target.notes),
    }
    for name, p in paths.items():
        s = stats[name]
        entry = {**s.as_dict(), 'per_sample_p50_ms': s.p50_ms / batch, 'build_s': p.build_s,
                 'speedup_vs_eager_p50': eager_p50 / s.p50_ms if s.p50_ms > 0 else None,
                 'achieved_gflops': flops['total'] / (s.p50_ms / 1000.0) / 1e9 if s.p50_ms > 0 else None,
                 'info': p.info}
        if name in agree:
            entry['agreement_vs_eager'] = agree[name]
        section['paths'][name] = entry
    if NATIVE in paths:
        section['notes'].append(f'{NATIVE} skips the zeros of the spike maps: its GFLOP/s and % of GEMM count '
                                'the dense FLOPs, so more than 100 % is possible')
    # the target is the CPU's (the node's 2-core budget); a GPU's ratio is reported beside it
    optimised = {n: e for n, e in section['paths'].items() if n != EAGER and n not in GPU_PATHS}
    best = min(optimised, key=lambda n: optimised[n]['p50_ms']) if optimised else None
    section['best_optimised_path'] = best
    section['best_speedup_vs_eager'] = optimised[best]['speedup_vs_eager_p50'] if best else None
    section['speedup_target_met'] = (section['best_speedup_vs_eager'] >= SPEEDUP_TARGET) if best else None
    gpu = {n: e for n, e in section['paths'].items() if n in GPU_PATHS}
    if gpu:
        gpu_best = min(gpu, key=lambda n: gpu[n]['p50_ms'])
        section['gpu_best_path'] = gpu_best
        section['gpu_best_speedup_vs_eager'] = gpu[gpu_best]['speedup_vs_eager_p50']
    if target.card.model.startswith(SCMRL_FAMILY) and best is not None:
        fastest = min(e['per_sample_p50_ms'] for n, e in section['paths'].items() if n not in GPU_PATHS)
        section['scmrl_reference'] = reference_comparison(target.card.model, target.audio.shape, threads, fastest)
    iterations = QUICK_PROFILE_ITERATIONS if quick else PROFILE_ITERATIONS
    # where the time goes in the fastest torch path (the reference's profile is in docs/performance.md)
    section['profiled_path'] = FAST
    section['stage_profile_ms'] = profiling.stage_profile(model, eager_model_inputs, iterations=iterations)
    section['top_ops'] = profiling.op_profile(paths[FAST].run)
    return section


def reference_comparison(model: str, audio_shape: tuple[int, ...], threads: int, ours_ms: float,
                         identity: CpuIdentity | None = None, table: dict | None = None) -> dict[str, Any]:
    """Our fastest CPU time per sample against the S-CMRL reference measured on *this* CPU.

    The reference row comes from ``reference_timings.yaml`` by CPU identity; with no row for this CPU
    there is no ratio (``speedup_vs_reference`` None, ``no_reference`` says so). A ratio needs the
    reference's geometry and thread count too (``comparable``). The ratio divides the row's lower bound
    (the conservative one); ``speedup_range`` spans the row.
    """
    identity = identity or cpu_identity()
    table = table or load_reference_timings()
    ref = table['reference']
    row = reference_for(identity, table['rows'])
    comparable = (model == ref['model'] and tuple(audio_shape[:2]) == (ref['timesteps'], ref['batch'])
                  and list(audio_shape[-2:]) == list(ref['input_size']) and threads == ref['threads'])
    out: dict[str, Any] = {
        'reference': ref, 'cpu': identity.as_dict(), 'ours_best_ms_per_sample': ours_ms, 'comparable': comparable,
        'reference_row': row, 'reference_ms_per_sample': None, 'speedup_vs_reference': None,
        'speedup_range': None, 'target_met': None}
    if row is None:
        out['no_reference'] = NO_REFERENCE
        return out
    low, high = row['p50_ms_batch1']
    out.update({'reference_ms_per_sample': [low, high], 'speedup_vs_reference': low / ours_ms,
                'speedup_range': [low / ours_ms, high / ours_ms],
                'target_met': low / ours_ms >= SPEEDUP_TARGET if comparable else None})
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--json', type=Path, required=True, help='write the report here')
    parser.add_argument('--card', type=Path, default=None,
                        help='model card to bench (default: the shipped default model, if present)')
    parser.add_argument('--no-card', action='store_true', help='skip the card model')
    parser.add_argument('--model', action='append', default=None, metavar='NAME',
                        help=f'registered model to bench (repeatable; default: {", ".join(DEFAULT_MODELS)}); '
                             '"none" benches no registry model')
    parser.add_argument('--input-size', type=int, default=DEFAULT_INPUT_SIZE,
                        help='square input size for --model (default %(default)s)')
    parser.add_argument('--timesteps', type=int, default=DEFAULT_TIMESTEPS, help='T for --model')
    parser.add_argument('--batch', type=int, default=DEFAULT_BATCH, help='windows per call')
    parser.add_argument('--threads', type=int, default=DEFAULT_THREADS,
                        help='torch and onnxruntime intra-op threads (default %(default)s); torch\'s OpenMP '
                             'threads sleep when idle (OMP_WAIT_POLICY=PASSIVE unless the environment sets it)')
    parser.add_argument('--cuda', choices=CUDA_MODES, default='auto',
                        help='also time the GPU backends (torch on CUDA, TensorRT): auto = when torch sees a '
                             'GPU (default), on = fail without one, off = CPU only. GPU paths are reported '
                             'beside the CPU target, not counted for it')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile (inductor; minutes of compilation on 2 cores)')
    parser.add_argument('--no-node', action='store_true',
                        help='skip the end-to-end node replay')
    parser.add_argument('--node-seconds', type=float, default=None,
                        help=f'seconds of real-time sensor data for the node replay (default {node_bench.NODE_SECONDS:g}, '
                             f'--quick {node_bench.QUICK_NODE_SECONDS:g})')
    parser.add_argument('--node-params', type=Path, default=None,
                        help=f'node parameter file for the replay (default: the shipped {node_bench.NODE_PARAMS_FILE})')
    parser.add_argument('--node-backend', default='auto',
                        help='backend of the node replay (default auto: what a robot gets)')
    parser.add_argument('--data-root', type=Path, default=None,
                        help='AV digits data (fsdd/, mnist/) for real inputs (default: beside the checkout)')
    parser.add_argument('--quick', action='store_true', help='short timing budget (a smoke run, not a result)')


def _validate(args: argparse.Namespace) -> None:
    for name in ('input_size', 'timesteps', 'batch', 'threads'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.node_seconds is not None and not args.node_seconds > 0:
        raise ValueError(f'--node-seconds must be > 0, got {args.node_seconds}')


def _use_cuda(mode: str) -> bool:
    import torch
    if mode == 'on' and not torch.cuda.is_available():
        raise ValueError(f'--cuda on, but torch {torch.__version__} sees no CUDA device '
                         f'(CUDA {torch.version.cuda or "not compiled in"})')
    return mode != 'off' and torch.cuda.is_available()


def run(args: argparse.Namespace) -> dict:
    """Run the bench described by ``args`` and return the report (also used by tests)."""
    import torch

    from ..paths import default_data_root, default_model_card
    _validate(args)
    cuda = _use_cuda(args.cuda)
    torch.set_num_threads(args.threads)
    data_root = args.data_root or default_data_root()
    report: dict[str, Any] = {
        'command': ' '.join(['av-snn', 'bench', *sys.argv[2:]]) if sys.argv[1:2] == ['bench'] else None,
        'settings': {'threads': args.threads, 'quick': bool(args.quick), 'compile': bool(args.compile),
                     'cuda': cuda,
                     'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
                     'omp_wait_policy_source': ('environment' if _OMP_POLICY_PRESET else 'bench default')
                     + (' (torch was loaded before the bench: may not apply)' if _TORCH_PRELOADED else ''),
                     'data_root': str(data_root) if data_root else None},
        'machine': machine_info(),
        'targets': {'optimised_speedup_vs_eager': SPEEDUP_TARGET, 'scmrl_speedup_vs_reference': SPEEDUP_TARGET,
                    'node_p99_over_inference_ms': 10.0, 'node_dropped_windows': 0},
    }
    gemm_repeats = QUICK_GEMM_REPEATS if args.quick else GEMM_REPEATS
    report['gemm'] = profiling.measure_gemm_gflops(repeats=gemm_repeats)
    models: list[dict] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix='av-snn-bench-') as tmp:
        targets: list[Callable[[], Target]] = []
        gemm_runs: list[dict] = []
        if not args.no_card:
            card = args.card or default_model_card()
            if Path(card).exists():
                targets.append(lambda card=card: card_target(Path(card), args.batch, data_root))
            else:
                skipped['card'] = f'no model card at {card} (train/ship the default model or pass --card)'
        names = [n for n in (args.model or list(DEFAULT_MODELS)) if n.lower() != 'none']
        for name in names:
            targets.append(lambda name=name: registry_target(name, args.input_size, args.timesteps, args.batch,
                                                             data_root, Path(tmp)))
        for make in targets:
            target = make()
            print(f'av-snn bench: {target.label} ...', file=sys.stderr, flush=True)
            models.append(bench_target(target, args.threads, args.compile, args.quick, cuda))
            gemm_runs.append(profiling.measure_gemm_gflops(repeats=gemm_repeats))
        report['models'] = models
        report['skipped'] = skipped
        if not args.no_node:
            report['node'] = _node_section(args, data_root, Path(tmp), models)
    gemm_runs.append(profiling.measure_gemm_gflops(repeats=gemm_repeats))
    report['gemm_end'] = gemm_runs[-1]
    # The machine's peak is the best product seen in the whole run (a shared machine depresses single
    # measurements); every path's achieved throughput is a fraction of that.
    peak = max(g['best_gflops'] for g in [report['gemm'], *gemm_runs])
    report['gemm_peak_gflops'] = peak
    for m in models:
        for name, entry in m['paths'].items():
            # the peak is the CPU's: a GPU path's fraction of it would mean nothing
            cpu = name not in GPU_PATHS
            entry['fraction_of_gemm_peak'] = entry['achieved_gflops'] / peak if entry['achieved_gflops'] and cpu else None
    for m in models:
        ref = m.get('scmrl_reference') or {}
        if ref.get('reference_row'):
            ref['gemm_check'] = gemm_check(peak, ref['reference_row'])
    report['machine']['loadavg_end'] = list(os.getloadavg())
    return report


#: a run whose GEMM peak lies outside [1/f, f] x the reference row's GEMM is flagged: the machine is
#: loaded, throttled or not the kind the row was measured on, and the ratio is not to be trusted
GEMM_MISMATCH_FACTOR = 1.5


def gemm_check(peak_gflops: float, row: dict) -> dict[str, Any]:
    """This run's GEMM peak against the one recorded with the reference row (same CPU kind)."""
    low, high = row['fp32_gemm_gflops']
    ok = low / GEMM_MISMATCH_FACTOR <= peak_gflops <= high * GEMM_MISMATCH_FACTOR
    return {'this_run_gflops': peak_gflops, 'reference_row_gflops': [low, high], 'consistent': ok,
            'note': None if ok else (f'GEMM {peak_gflops:.0f} GFLOP/s here vs {low:g}-{high:g} when the reference was '
                                     'measured: loaded machine or another CPU kind; the ratio is not comparable')}


def _node_section(args: argparse.Namespace, data_root: Path | None, workdir: Path, models: list[dict]) -> dict:
    """The node replay of the card model (or, without a card, of a MISNet-tiny card written here)."""
    from ..paths import default_model_card
    if data_root is None:
        return {'skipped': 'no AV digits data (--data-root) to replay'}
    card = next((Path(m['card']) for m in models if m['source'] == 'card'), None)
    if card is None and not args.no_card:
        candidate = args.card or default_model_card()
        card = Path(candidate) if Path(candidate).exists() else None
    note = None
    if card is None:
        target = registry_target(NODE_FALLBACK_MODEL, NODE_FALLBACK_SIZE, DEFAULT_TIMESTEPS, 1, data_root,
                                 workdir / 'node_card')
        card = Path(target.card.path)
        note = (f'no shipped default model: an untrained BN-calibrated {NODE_FALLBACK_MODEL} card at '
                f'{NODE_FALLBACK_SIZE}x{NODE_FALLBACK_SIZE} stands in (same pipeline cost, meaningless accuracy)')
    seconds = args.node_seconds or (node_bench.QUICK_NODE_SECONDS if args.quick else node_bench.NODE_SECONDS)
    print(f'av-snn bench: node replay of {card} for {seconds:g} s at real time ...', file=sys.stderr, flush=True)
    # the node process gets the caller's environment, not the bench's own OpenMP default
    section = node_bench.bench_node(card, args.node_backend, args.threads, seconds, data_root, workdir,
                                    args.node_params,
                                    node_env_drop=() if _OMP_POLICY_PRESET else ('OMP_WAIT_POLICY',))
    if note:
        section['note'] = note
    return section


def summary(report: dict) -> str:
    """A short text table of the report for the terminal."""
    g = report['gemm']
    cpu = report['machine']['cpu']
    lines = [f'CPU {cpu["model_name"]} (vendor {cpu["vendor"]}, family {cpu["family"]} model {cpu["model"]}, '
             f'{cpu["logical_cpus"]} usable CPUs; {" ".join(cpu["flags"])})',
             f'GEMM fp32 {g["size"]}^3, {g["threads"]} threads: best {report["gemm_peak_gflops"]:.1f} GFLOP/s '
             f'over the run (first median {g["median_gflops"]:.1f}); load avg '
             f'{report["machine"]["loadavg_1_5_15"][0]:.2f} at start, {report["machine"]["loadavg_end"][0]:.2f} at end']
    for m in report['models']:
        lines.append(f'\n{m["label"]}  {m["parameters"] / 1e6:.2f} M params, '
                     f'{m["flops_per_call"] / 1e9:.2f} GFLOP/call ({m["input"]["kind"]} input)')
        lines.append(f'  {"path":<20}{"p50 ms":>9}{"p95 ms":>9}{"x eager":>9}{"%GEMM":>7}  agreement')
        for name, e in m['paths'].items():
            agree = e.get('agreement_vs_eager')
            agree_s = (f'argmax {"==" if agree["argmax_equal"] else "!="}, max|d| {agree["max_abs_diff"]:.2g}'
                       if agree else '(reference)')
            frac = e['fraction_of_gemm_peak']
            lines.append(f'  {name:<20}{e["p50_ms"]:9.2f}{e["p95_ms"]:9.2f}{e["speedup_vs_eager_p50"]:9.2f}'
                         f'{100 * frac if frac else float("nan"):6.1f}%  {agree_s}')
        for name, why in m['skipped'].items():
            lines.append(f'  {name:<20}skipped: {why}')
        lines += [f'  note: {note}' for note in m['notes']]
        if 'scmrl_reference' in m:
            lines.append('  vs the S-CMRL reference: ' + _reference_text(m['scmrl_reference']))
    for name, why in report.get('skipped', {}).items():
        lines.append(f'{name}: skipped: {why}')
    if report.get('node'):
        lines.append(node_bench.node_summary(report['node']))
    lines += target_lines(report)
    return '\n'.join(lines)


def _reference_text(r: dict) -> str:
    """``2.10x the reference (79-80 ms/sample on this CPU)`` or the no-reference message, naming the CPU."""
    cpu = r['cpu']
    where = f'{cpu["model_name"]}, family {cpu["family"]} model {cpu["model"]}, {cpu["logical_cpus"]} CPUs'
    if r['speedup_vs_reference'] is None:
        return f'{r.get("no_reference", NO_REFERENCE)} ({where})'
    low, high = r['reference_ms_per_sample']
    gemm_note = (r.get('gemm_check') or {}).get('note')
    return (f'{r["speedup_vs_reference"]:.2f}x the reference ({low:g}-{high:g} ms/sample measured on this CPU '
            f'kind, {r["reference_row"]["date"]}; {where})' + (f' WARNING: {gemm_note}' if gemm_note else ''))


def target_lines(report: dict) -> list[str]:
    """One line per issue target measured in this report: the value and met / NOT met."""
    def verdict(ok: bool | None) -> str:
        return 'met' if ok else 'NOT met'
    lines = ['\ntargets:']
    for m in report['models']:
        if m.get('best_optimised_path'):
            lines.append(f'  {m["label"]}: {m["best_optimised_path"]} {m["best_speedup_vs_eager"]:.2f}x eager torch '
                         f'(>= {SPEEDUP_TARGET:g}x): {verdict(m["speedup_target_met"])}')
        if m.get('gpu_best_path'):
            lines.append(f'  {m["label"]}: on the GPU {m["gpu_best_path"]} {m["gpu_best_speedup_vs_eager"]:.2f}x '
                         'eager torch on the CPU (beside the target, which is the CPU\'s)')
        if 'scmrl_reference' in m:
            r = m['scmrl_reference']
            verdict_text = (verdict(r['target_met']) if r['target_met'] is not None else
                            'not comparable (the reference is E=256, T=4, 128x128, 2 threads)' if r['speedup_vs_reference']
                            else 'not measurable here')
            lines.append(f'  {m["label"]}: {_reference_text(r)} (>= {SPEEDUP_TARGET:g}x): {verdict_text}')
    node = report.get('node') or {}
    for key, text in (('no_dropped_windows', 'node: no dropped windows at real time'),
                      ('p99_within_inference_plus_10ms', 'node: end-to-end p99 <= inference p99 + 10 ms')):
        if key in node.get('targets', {}):
            lines.append(f'  {text}: {verdict(node["targets"][key])}')
    return lines if len(lines) > 1 else []


def main(args: argparse.Namespace) -> int:
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f'av-snn bench: {exc}', file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    print(f'report: {args.json}')
    return 0
