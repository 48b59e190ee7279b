"""The no-event decision and the conflict flag of one window (pure; the perception contract, items 3 and 5).

Training's evaluator and the runtime both decide with these functions, so "what counts as an event"
has one definition. ``scores`` are calibrated probabilities (softmax of the scaled logits).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: label published for a window with no accepted event
NO_EVENT_LABEL = 'none'
#: class id published for a no-event window when the model has no background class
NO_EVENT_CLASS_ID = -1
#: flags published with a window (Classification.flags)
FLAG_NO_EVENT = 'no_event'
FLAG_CONFLICT = 'conflict'
#: default of the card key ``conflict_threshold``
DEFAULT_CONFLICT_THRESHOLD = 0.8


def decide(scores: np.ndarray, labels: Sequence[str], no_event_label: str | None,
           accept_threshold: float) -> tuple[int, str, float, bool]:
    """``(class_id, label, confidence, is_event)`` of one window.

    An event is reported only when the top class is not ``no_event_label`` and its probability is
    ``>= accept_threshold``; its confidence is that probability. Otherwise the window is no-event:
    label :data:`NO_EVENT_LABEL`, class id = index of ``no_event_label`` (or :data:`NO_EVENT_CLASS_ID`
    when the model has no background class), confidence = probability of "no event" (``p[none]`` for a
    background-class model, else ``1 - top probability``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f'need one score per label ({len(labels)}), got shape {scores.shape}')
    k = int(scores.argmax())
    none_k = None if no_event_label is None else list(labels).index(no_event_label)
    if k != none_k and scores[k] >= accept_threshold:
        return k, str(labels[k]), float(scores[k]), True
    if none_k is None:
        return NO_EVENT_CLASS_ID, NO_EVENT_LABEL, float(1.0 - scores[k]), False
    return none_k, NO_EVENT_LABEL, float(scores[none_k]), False


def conflict(audio_scores: np.ndarray | None, visual_scores: np.ndarray | None, labels: Sequence[str],
             no_event_label: str | None, threshold: float = DEFAULT_CONFLICT_THRESHOLD) -> bool:
    """Whether both per-modality heads are confident (top probability ``>= threshold`` each) and name
    different classes, neither of them the no-event class. A missing head (``None``) never conflicts."""
    if audio_scores is None or visual_scores is None:
        return False
    a, v = int(np.argmax(audio_scores)), int(np.argmax(visual_scores))
    if a == v or no_event_label in (labels[a], labels[v]):
        return False
    return bool(audio_scores[a] >= threshold and visual_scores[v] >= threshold)
