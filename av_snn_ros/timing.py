"""Wall-clock timing of callables: latency percentiles, and interleaved timing of several candidates.

Pure Python (no torch): the backend chooser (``auto`` timing onnxruntime against torch on CUDA) and
the bench both use it. Timings use ``time.perf_counter`` around whole calls (what a caller waits for).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

#: Default time budget (s) per measured configuration, after warm-up.
DEFAULT_MIN_TIME_S = 2.0


@dataclass
class LatencyStats:
    """Percentiles of per-call wall time, in milliseconds."""

    n: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0..100) of already sorted values."""
    if not sorted_values:
        raise ValueError('percentile of an empty sequence')
    if not 0.0 <= q <= 100.0:
        raise ValueError(f'percentile q must lie in [0, 100], got {q}')
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def latency_stats(samples_s: Iterable[float]) -> LatencyStats:
    """Summarise per-call durations given in seconds."""
    ms = sorted(1000.0 * s for s in samples_s)
    if not ms:
        raise ValueError('no latency samples')
    return LatencyStats(n=len(ms), mean_ms=sum(ms) / len(ms), p50_ms=percentile(ms, 50),
                        p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99), min_ms=ms[0], max_ms=ms[-1])


def time_callable(fn: Callable[[], Any], warmup: int = 2, min_iters: int = 5, max_iters: int = 200,
                  min_time_s: float = DEFAULT_MIN_TIME_S) -> LatencyStats:
    """Call ``fn()`` ``warmup`` times, then at least ``min_iters`` times and until ``min_time_s`` passed."""
    if min_iters < 1 or max_iters < min_iters:
        raise ValueError(f'need 1 <= min_iters <= max_iters, got {min_iters}, {max_iters}')
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_iters or (time.perf_counter() - start < min_time_s and len(samples) < max_iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return latency_stats(samples)


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 2, min_rounds: int = 5,
                     max_rounds: int = 200, min_time_s: float = DEFAULT_MIN_TIME_S) -> dict[str, LatencyStats]:
    """Time several callables round-robin (A, B, C, A, B, C, ...) so they share the same machine load.

    On a machine shared with other jobs, timing A then B lets a load change masquerade as a speed-up;
    interleaving exposes every candidate to the same background, so ratios stay meaningful even when
    absolute numbers move. ``min_time_s`` bounds the total time of all candidates together.
    """
    if not fns:
        raise ValueError('nothing to time')
    if min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(f'need 1 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}')
    for _ in range(max(0, warmup)):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < min_time_s and rounds < max_rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: latency_stats(values) for name, values in samples.items()}
