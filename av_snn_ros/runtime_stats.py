"""Runtime bookkeeping for the node: counters, input rates, latency percentiles, throttled warnings.

Pure Python, thread-safe where noted, no ROS: the node feeds these and turns snapshots into diagnostics.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable, Iterable, Mapping

import numpy as np

#: latency samples kept per tracker (a few minutes at a few windows per second).
DEFAULT_LATENCY_SAMPLES = 1024
#: sliding window over which input rates are measured.
DEFAULT_RATE_WINDOW_S = 5.0
#: how often one warning reason may be logged again after its first occurrence.
DEFAULT_WARN_PERIOD_S = 10.0
PERCENTILES = (50, 95, 99)


class Counters:
    """A thread-safe ``Counter`` (many callback threads increment, the diagnostics timer reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def update(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


class RateMeter:
    """Events per second over the last ``window_s`` seconds of a monotonic clock (thread-safe)."""

    def __init__(self, window_s: float = DEFAULT_RATE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not window_s > 0:
            raise ValueError(f'window_s must be > 0, got {window_s}')
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self._started = clock()

    def tick(self) -> None:
        now = self._clock()
        with self._lock:
            self._times.append(now)
            self._expire(now)

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate_hz(self) -> float:
        now = self._clock()
        with self._lock:
            self._expire(now)
            span = min(self.window_s, max(now - self._started, 1e-9))
            return len(self._times) / span

    def reset(self) -> None:
        with self._lock:
            self._times.clear()
            self._started = self._clock()


class LatencyTracker:
    """The last ``maxlen`` latency samples (seconds) and their percentiles (thread-safe)."""

    def __init__(self, maxlen: int = DEFAULT_LATENCY_SAMPLES) -> None:
        if maxlen < 1:
            raise ValueError(f'maxlen must be >= 1, got {maxlen}')
        self._lock = threading.Lock()
        self._samples: deque[float] = deque(maxlen=maxlen)
        self.count = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(float(seconds))
            self.count += 1

    def percentiles(self, qs: Iterable[int] = PERCENTILES) -> dict[str, float]:
        """``{'p50': ..., 'p95': ..., ...}`` in seconds over the kept samples; empty before any sample."""
        with self._lock:
            if not self._samples:
                return {}
            data = np.fromiter(self._samples, dtype=np.float64)
        return {f'p{q}': float(np.percentile(data, q)) for q in qs}

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self.count = 0


class ThrottledWarnings:
    """Decides when a warning for a reason may be logged: the first time, then at most once per period.

    ``check(reason)`` returns ``None`` (stay quiet) or the number of occurrences since the last report
    (including this one), so the log line can say "N times in the last period" instead of spamming.
    """

    def __init__(self, period_s: float = DEFAULT_WARN_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._pending: Counter[str] = Counter()

    def check(self, reason: str) -> int | None:
        now = self._clock()
        with self._lock:
            self._pending[reason] += 1
            last = self._last.get(reason)
            if last is not None and now - last < self.period_s:
                return None
            self._last[reason] = now
            count = self._pending.pop(reason)
            return count


#: received / published below this fraction makes diagnostics warn (frames or audio lost on the way)
LOW_RECEIPT_FRACTION = 0.5
#: messages needed before the receipt fraction is estimated
MIN_RECEIPT_SAMPLES = 20


class ReceiptMonitor:
    """How much of what a publisher sent arrives, estimated from the stamps of what did (thread-safe).

    Images: the publisher's period is the 10th percentile of the gaps between consecutive received
    stamps (with random losses, some neighbours still arrive back to back), and the fraction is
    ``(n - 1) * period / span``. Audio chunks carry their duration: the fraction is the audio received
    over the stamp span it covers. Neither needs the publisher's rate to be configured anywhere.
    """

    def __init__(self, maxlen: int = 200) -> None:
        self._lock = threading.Lock()
        self._stamps: deque[int] = deque(maxlen=maxlen)
        self._durations: deque[float] = deque(maxlen=maxlen)

    def add(self, stamp_ns: int, duration_s: float | None = None) -> None:
        with self._lock:
            self._stamps.append(int(stamp_ns))
            self._durations.append(float(duration_s) if duration_s is not None else float('nan'))

    def fraction(self) -> float | None:
        """Received / published over the kept messages, or None before there are enough of them."""
        with self._lock:
            if len(self._stamps) < MIN_RECEIPT_SAMPLES:
                return None
            order = np.argsort(np.fromiter(self._stamps, dtype=np.int64), kind='stable')
            stamps = np.fromiter(self._stamps, dtype=np.int64)[order]
            durations = np.fromiter(self._durations, dtype=np.float64)[order]
        span_s = (stamps[-1] - stamps[0]) / 1e9
        if span_s <= 0:
            return None
        if np.isfinite(durations).all():
            return float(min(1.0, durations[:-1].sum() / span_s))
        gaps = np.diff(stamps)
        gaps = gaps[gaps > 0]
        if gaps.size == 0:
            return None
        period_s = float(np.percentile(gaps, 10)) / 1e9
        return float(min(1.0, (stamps.size - 1) * period_s / span_s))

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._durations.clear()
