"""The one no-event / acceptance decision, shared by the runtime node and the evaluator (ROS-free, numpy).

Perception contract (docs/models.md): a window reports an event only when the top class of the
calibrated scores is not the card's no-event class (``no_event_label``, normally ``none``) AND its
probability reaches ``accept_threshold``. Otherwise the window is a no-event window: label
:data:`NO_EVENT_LABEL`, class id = index of the no-event class when the card has one (else
:data:`NO_EVENT_CLASS_ID`), and confidence = the probability of "no event" (``p[none]`` for a model with a
background class, else ``1 - top probability``).

The conflict rule lives here too, so the node's ``conflict`` flag and the evaluator's ``conflict``
condition are the same computation.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

#: label published for a window without an accepted event (the contract's no-event label)
NO_EVENT_LABEL = 'none'
#: class id published for a no-event window of a model without a background class
NO_EVENT_CLASS_ID = -1
#: flags published with a window (Classification.flags)
FLAG_NO_EVENT = 'no_event'
FLAG_CONFLICT = 'conflict'
#: default of the card key ``conflict_threshold``
DEFAULT_CONFLICT_THRESHOLD = 0.8


class Decision(NamedTuple):
    """Outcome of one window: what is published as class id, label and confidence."""

    class_id: int
    label: str
    confidence: float
    is_event: bool


def _check(scores: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != len(labels) or p.shape[0] == 0:
        raise ValueError(f'scores must be a 1-D vector with one probability per label ({len(labels)}), '
                         f'got shape {p.shape}')
    if not np.isfinite(p).all():
        raise ValueError('scores contain NaN or Inf')
    return p


def no_event_index(labels: Sequence[str], no_event_label: str | None) -> int | None:
    """Index of the background class in ``labels``, or ``None`` for a model without one.

    Raises ``ValueError`` when ``no_event_label`` is given but is not one of ``labels``.
    """
    if no_event_label is None:
        return None
    labels = list(labels)
    if no_event_label not in labels:
        raise ValueError(f'no_event_label {no_event_label!r} is not one of the labels {labels}')
    return labels.index(no_event_label)


def decide(scores: np.ndarray, labels: Sequence[str], no_event_label: str | None = None,
           accept_threshold: float = 0.0) -> Decision:
    """Calibrated class probabilities of one window -> ``(class_id, label, confidence, is_event)``.

    Args:
        scores: ``(K,)`` probabilities (softmax of ``logit_scale * logits``), one per label.
        labels: the card's labels.
        no_event_label: the card's background class (``none``) or ``None`` when it has none.
        accept_threshold: minimum probability of the top class for an event, in [0, 1].
    """
    if not 0.0 <= float(accept_threshold) <= 1.0:
        raise ValueError(f'accept_threshold must be in [0, 1], got {accept_threshold}')
    p = _check(scores, labels)
    background = no_event_index(labels, no_event_label)
    k = int(p.argmax())
    top = float(p[k])
    if k != background and top >= accept_threshold:
        return Decision(k, str(labels[k]), top, True)
    if background is not None:
        return Decision(background, NO_EVENT_LABEL, float(p[background]), False)
    return Decision(NO_EVENT_CLASS_ID, NO_EVENT_LABEL, 1.0 - top, False)


def is_conflict(audio_scores: np.ndarray | None, visual_scores: np.ndarray | None, labels: Sequence[str],
                no_event_label: str | None = None,
                conflict_threshold: float = DEFAULT_CONFLICT_THRESHOLD) -> bool:
    """True when both per-modality heads are confident (each top probability >= ``conflict_threshold``)
    and name different classes, neither of them the no-event class. A missing head never conflicts."""
    if audio_scores is None or visual_scores is None:
        return False
    pa, pv = _check(audio_scores, labels), _check(visual_scores, labels)
    background = no_event_index(labels, no_event_label)
    ka, kv = int(pa.argmax()), int(pv.argmax())
    return bool(ka != kv and background not in (ka, kv)
                and pa[ka] >= conflict_threshold and pv[kv] >= conflict_threshold)
