"""Score classifications against ground-truth spans (pure Python + numpy).

Matching rule: each labelled span is scored by the classification whose window
``[window_start, window_end]`` overlaps it the longest (ties: the earlier window). A span that no window
overlaps counts as *missed* and as wrong in the accuracy. Classifications that overlap no span (e.g. the
tail of a bag) are reported as ``unmatched_predictions`` and do not affect accuracy.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

LATENCY_PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Span:
    """A ground-truth label over ``[start_ns, end_ns]``."""

    start_ns: int
    end_ns: int
    class_id: int
    label: str = ''


@dataclass(frozen=True)
class Prediction:
    """One received classification of the window ``[start_ns, end_ns]``."""

    start_ns: int
    end_ns: int
    class_id: int
    confidence: float = float('nan')
    label: str = ''
    latency_s: float = float('nan')


@dataclass(frozen=True)
class Match:
    """A span with the prediction that scores it (``None`` = missed) and their overlap in ns."""

    span: Span
    prediction: Prediction | None
    overlap_ns: int

    @property
    def correct(self) -> bool:
        return self.prediction is not None and self.prediction.class_id == self.span.class_id


def overlap_ns(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    """Length of the intersection of two closed intervals (0 when disjoint)."""
    return max(0, min(a_end, b_end) - max(a_start, b_start))


def match_predictions(spans: Sequence[Span], predictions: Sequence[Prediction]) -> list[Match]:
    """Pair every span with its most-overlapping prediction (see the module docstring)."""
    for p in predictions:
        if p.end_ns < p.start_ns:
            raise ValueError(f'prediction window ends before it starts: {p}')
    ordered = sorted(predictions, key=lambda p: (p.start_ns, p.end_ns))
    starts = [p.start_ns for p in ordered]
    longest = max((p.end_ns - p.start_ns for p in ordered), default=0)
    matches = []
    for span in spans:
        if span.end_ns <= span.start_ns:
            raise ValueError(f'empty ground-truth span: {span}')
        # only windows starting in (span.start - longest window, span.end) can overlap the span
        lo = bisect.bisect_right(starts, span.start_ns - longest)
        hi = bisect.bisect_left(starts, span.end_ns)
        best, best_overlap = None, 0
        for p in ordered[lo:hi]:
            ov = overlap_ns(span.start_ns, span.end_ns, p.start_ns, p.end_ns)
            if ov > best_overlap:
                best, best_overlap = p, ov
        matches.append(Match(span, best, best_overlap))
    return matches


def unmatched_predictions(spans: Sequence[Span], predictions: Sequence[Prediction]) -> list[Prediction]:
    """Predictions whose window overlaps no span."""
    return [p for p in predictions
            if not any(overlap_ns(s.start_ns, s.end_ns, p.start_ns, p.end_ns) > 0 for s in spans)]


def confusion_matrix(matches: Sequence[Match], num_classes: int) -> np.ndarray:
    """``(K, K + 1)`` counts: row = true class, column = predicted class, last column = missed."""
    cm = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for m in matches:
        if not 0 <= m.span.class_id < num_classes:
            raise ValueError(f'ground-truth class {m.span.class_id} outside 0..{num_classes - 1}')
        if m.prediction is None:
            cm[m.span.class_id, num_classes] += 1
        elif 0 <= m.prediction.class_id < num_classes:
            cm[m.span.class_id, m.prediction.class_id] += 1
        else:
            raise ValueError(f'predicted class {m.prediction.class_id} outside 0..{num_classes - 1}')
    return cm


def percentiles(values: Iterable[float], qs: Sequence[float] = LATENCY_PERCENTILES) -> dict[str, float | None]:
    """``{'p50': ..., 'p95': ..., ...}`` of the finite values (``None`` when there are none)."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {f'p{q:g}': None for q in qs}
    return {f'p{q:g}': float(np.percentile(arr, q)) for q in qs}


def score(spans: Sequence[Span], predictions: Sequence[Prediction], labels: Sequence[str],
          unreadable_spans: int = 0) -> dict:
    """Accuracy, per-class recall, confusion matrix and latency percentiles as a JSON-ready dict.

    ``accuracy`` = correct spans / all spans (missed spans count as wrong). ``unreadable_spans``: labels
    the source holds but that could not be read (a damaged bag); they count as not scored, so a score
    over the few readable labels never reads as a full one. Per-class recall is the same ratio within
    each true class (``None`` for classes with no span; unreadable labels have no known class).
    Latency percentiles cover every received prediction, matched or not, in seconds.
    """
    if unreadable_spans < 0:
        raise ValueError(f'unreadable_spans must be >= 0, got {unreadable_spans}')
    num_classes = len(labels)
    if num_classes == 0:
        raise ValueError('labels must not be empty')
    matches = match_predictions(spans, predictions)
    cm = confusion_matrix(matches, num_classes)
    correct = sum(m.correct for m in matches)
    per_class = {}
    for k, name in enumerate(labels):
        total = int(cm[k].sum())
        per_class[name] = float(cm[k, k] / total) if total else None
    latencies = [p.latency_s for p in predictions]
    return {
        'num_spans': len(spans),
        'num_predictions': len(predictions),
        'correct': int(correct),
        'missed': int(cm[:, num_classes].sum()),
        'unreadable_spans': int(unreadable_spans),
        'accuracy': float(correct / (len(spans) + unreadable_spans)) if spans or unreadable_spans else None,
        'per_class_recall': per_class,
        'confusion_matrix': cm.tolist(),
        'confusion_matrix_columns': [*labels, 'missed'],
        'unmatched_predictions': len(unmatched_predictions(spans, predictions)),
        'latency_s': {**percentiles(latencies), 'mean': _mean(latencies), 'max': _max(latencies),
                      'count': sum(1 for v in latencies if np.isfinite(v))},
        'matches': [
            {'span_start_ns': m.span.start_ns, 'span_end_ns': m.span.end_ns, 'true': m.span.class_id,
             'true_label': m.span.label,
             'predicted': None if m.prediction is None else m.prediction.class_id,
             'confidence': None if m.prediction is None else _finite_or_none(m.prediction.confidence),
             'window_start_ns': None if m.prediction is None else m.prediction.start_ns,
             'window_end_ns': None if m.prediction is None else m.prediction.end_ns,
             'overlap': m.overlap_ns / (m.span.end_ns - m.span.start_ns),
             'latency_s': None if m.prediction is None else _finite_or_none(m.prediction.latency_s),
             'correct': m.correct}
            for m in matches],
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _max(values: Sequence[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.max(finite)) if finite else None
