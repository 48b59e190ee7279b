"""Measurement helpers for ``av-snn bench``: FLOPs, GEMM peak, per-layer profiles.

Everything here is ROS-free and model-agnostic: a model is any ``nn.Module`` called as
``model(*inputs)``. Latency statistics and interleaved timing are the runtime's
(:mod:`av_snn_ros.timing`); the per-layer profile uses ``torch.profiler`` and module hooks so it can say
*where* the time goes (convolution, batch norm, neurons, pooling, ...), which is what decides the
optimisation.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..timing import percentile

#: Square fp32 matrix size used to estimate this machine's GEMM peak: large enough to be compute
#: bound on a CPU (2 * 2048^3 = 17 GFLOP per call), small enough to take well under a second.
GEMM_SIZE = 2048


def measure_gemm_gflops(size: int = GEMM_SIZE, repeats: int = 5, dtype: torch.dtype = torch.float32) -> dict:
    """This machine's achieved fp32 GEMM throughput with torch's current thread count.

    Returns the best and the median GFLOP/s over ``repeats`` products of two ``size x size`` matrices
    (best = the peak the cores can reach; median = what a shared machine gave during this run).
    """
    if size < 1 or repeats < 1:
        raise ValueError(f'size and repeats must be >= 1, got {size}, {repeats}')
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen, dtype=dtype)
    b = torch.randn(size, size, generator=gen, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)                       # warm-up: thread pool, page faults
    flop = 2.0 * size ** 3
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(flop / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return {'size': size, 'dtype': str(dtype).replace('torch.', ''), 'threads': torch.get_num_threads(),
            'best_gflops': rates[-1], 'median_gflops': percentile(rates, 50)}


def count_flops(model: nn.Module, inputs: Sequence[torch.Tensor]) -> dict:
    """FLOPs of one ``model(*inputs)`` call by ``torch.utils.flop_counter`` (matmul/conv family only).

    Counted on the training-time computations (``reference_paths``), so every inference path is
    compared against the same number. Elementwise work (the spiking neurons, batch norm) is not counted: those ops are
    memory bound and the counter has no formula for them, so the achieved-throughput figure computed
    from this number is a fraction of *GEMM* peak, as its name says.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.neurons import reference_paths
    counter = FlopCounterMode(display=False)
    # the model's own FLOPs: the training-time computations (the fast paths pad one-channel stems)
    with torch.inference_mode(), reference_paths(), counter:
        model(*inputs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get('Global', {}).items()}
    return {'total': int(counter.get_total_flops()), 'by_op': dict(by_op)}


# Module type -> stage name in the per-layer profile; first match wins (subclasses included).
def _category(module: nn.Module) -> str | None:
    from spikingjelly.activation_based.neuron import BaseNode
    table: tuple[tuple[type, str], ...] = (
        (nn.Conv2d, 'conv'), (nn.Conv1d, 'conv'), (nn.BatchNorm2d, 'batchnorm'),
        (nn.BatchNorm1d, 'batchnorm'), (BaseNode, 'neuron'), (nn.MaxPool2d, 'pool'),
        (nn.AvgPool2d, 'pool'), (nn.Linear, 'linear'))
    for cls, name in table:
        if isinstance(module, cls):
            return name
    # A container that owns its conv and may call it directly (e.g. SeqConvBN with BN folded in at
    # inference) is timed as a whole: hooks on the inner Conv2d would never fire.
    if isinstance(getattr(module, 'conv', None), (nn.Conv1d, nn.Conv2d)):
        return 'conv'
    return None


def stage_profile(model: nn.Module, inputs: Sequence[torch.Tensor], iterations: int = 3) -> dict:
    """Wall time per layer category (conv, batchnorm, neuron, pool, linear, other), in ms per call.

    Forward hooks time the outermost module of a known category (a neuron with its surrogate, a
    conv container with its folded batch norm); ``other`` is the rest of the call (concatenation,
    reshapes, head, Python glue).
    Run after a warm-up; the call with the median total of ``iterations`` calls is reported.
    """
    if iterations < 1:
        raise ValueError(f'iterations must be >= 1, got {iterations}')
    totals: list[dict[str, float]] = []
    current: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    handles = []

    def pre_hook(mod: nn.Module, _inp: Any) -> None:
        starts[id(mod)] = time.perf_counter()

    def make_post(cat: str) -> Callable:
        def post_hook(mod: nn.Module, _inp: Any, _out: Any) -> None:
            current[cat] += time.perf_counter() - starts.pop(id(mod))
        return post_hook

    inside_timed: set[int] = set()
    for mod in model.modules():                     # pre-order: containers come before their children
        cat = _category(mod)
        if cat is None or id(mod) in inside_timed:
            continue
        inside_timed.update(id(m) for m in mod.modules() if m is not mod)
        handles.append(mod.register_forward_pre_hook(pre_hook))
        handles.append(mod.register_forward_hook(make_post(cat)))
    try:
        with torch.inference_mode():
            model(*inputs)                                      # warm-up
            for _ in range(iterations):
                current.clear()
                t0 = time.perf_counter()
                model(*inputs)
                total = time.perf_counter() - t0
                row = {k: 1000.0 * v for k, v in current.items()}
                row['other'] = max(0.0, 1000.0 * total - sum(row.values()))
                row['total'] = 1000.0 * total
                totals.append(row)
    finally:
        for h in handles:
            h.remove()
    # The call with the median total, whole: per-key medians of different calls would not add up.
    result: dict[str, Any] = dict(sorted(totals, key=lambda row: row['total'])[len(totals) // 2])
    result['share'] = {k: v / result['total'] for k, v in result.items() if k != 'total' and result['total'] > 0}
    return result


def op_profile(fn: Callable[[], Any], row_limit: int = 12) -> list[dict]:
    """The ``row_limit`` aten ops with the most self CPU time in one ``fn()`` call (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = []
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    for e in events[:row_limit]:
        rows.append({'op': e.key, 'calls': int(e.count), 'self_ms': e.self_cpu_time_total / 1000.0,
                     'share': e.self_cpu_time_total / total})
    return rows


def format_stage_table(profile: dict) -> str:
    """Human-readable one-line-per-stage rendering of :func:`stage_profile`'s result."""
    share = profile.get('share', {})
    lines = [f'{"stage":<10} {"ms":>9} {"share":>7}']
    for k in sorted(share, key=share.get, reverse=True):
        lines.append(f'{k:<10} {profile[k]:9.1f} {100 * share[k]:6.1f}%')
    lines.append(f'{"total":<10} {profile["total"]:9.1f}')
    return '\n'.join(lines)
