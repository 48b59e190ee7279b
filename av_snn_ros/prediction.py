"""One window -> one prediction: shared preprocessing, a backend call, softmax and the event decision
(ROS-free).

This is the whole per-window inference step of the node, kept out of the node so it can be tested and
benchmarked without ROS. The node runs it on its inference worker thread, never in a subscription callback.

A sense the window lacks (``window.audio`` / ``window.frames`` is None: a stalled sensor, or a sense an
audio-only card does not take) is fed as :func:`~av_snn_ros.preprocessing.missing_audio_steps` /
``missing_image_steps``: every backend takes both inputs (the ONNX export re-declares an input the model
ignores, TensorRT skips one its engine dropped), so an audio-only model gets the contract's zero visual
tensor and ignores it. The head of a missing sense is not reported (class id -1, confidence 0).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .backends.base import InferenceBackend
from .decision import FLAG_CONFLICT, FLAG_NO_EVENT, decide, is_conflict
from .model_card import ModelCard
from .preprocessing import preprocess_window
from .windowing import Window

#: class id published when the model has no head for a modality
NO_HEAD = -1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64 accumulate, float32 out)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Prediction:
    """What the node publishes for one window (probabilities, per-modality heads, timing).

    ``class_id`` / ``label`` / ``confidence`` are the decision (:func:`~av_snn_ros.decision.decide`):
    the accepted event, or the no-event outcome (label ``none``, flag ``no_event``).
    """

    start_ns: int
    end_ns: int
    class_id: int
    label: str
    confidence: float
    scores: np.ndarray
    labels: Sequence[str]
    model_name: str
    audio_class_id: int = NO_HEAD
    audio_confidence: float = 0.0
    visual_class_id: int = NO_HEAD
    visual_confidence: float = 0.0
    flags: set[str] = field(default_factory=set)
    is_event: bool = True
    preprocess_s: float = 0.0
    inference_s: float = 0.0


def _head_scores(logits: np.ndarray | None, scale: float, used: bool) -> np.ndarray | None:
    """Calibrated scores of one per-modality head, or None if the model has none or its sense was not fed."""
    return None if logits is None or not used else softmax(logits[0] * scale)


def _top(p: np.ndarray | None) -> tuple[int, float]:
    if p is None:
        return NO_HEAD, 0.0
    k = int(p.argmax())
    return k, float(p[k])


class Predictor:
    """``predictor(window) -> Prediction`` with the card's preprocessing, labels and decision on ``backend``.

    ``accept_threshold``: the calibrated probability an event needs; None uses the card's.
    """

    def __init__(self, backend: InferenceBackend, card: ModelCard, accept_threshold: float | None = None) -> None:
        if accept_threshold is not None and not 0.0 <= accept_threshold <= 1.0:
            raise ValueError(f'accept_threshold must be in [0, 1], got {accept_threshold}')
        self.backend = backend
        self.cfg = card.preprocessing
        self.labels = list(card.labels)
        self.model_name = f'{card.model}/{card.name}'
        self.card = card
        self.logit_scale = card.logit_scale
        self.accept_threshold = card.accept_threshold if accept_threshold is None else float(accept_threshold)

    def __call__(self, window: Window) -> Prediction:
        card = self.card
        t0 = time.perf_counter()
        audio, visual = preprocess_window(window.audio, window.frames, self.cfg)
        t1 = time.perf_counter()
        result = self.backend.infer(audio[:, None], visual[:, None])     # add batch: (T, 1, C, H, W)
        t2 = time.perf_counter()
        scores = softmax(result.logits[0] * self.logit_scale)
        if scores.shape != (len(self.labels),):
            raise ValueError(f'model returned {scores.shape[0]} scores for {len(self.labels)} labels')
        k, label, confidence, is_event = decide(scores, self.labels, card.no_event_label, self.accept_threshold)
        audio_p = _head_scores(result.audio_logits, card.audio_logit_scale,
                               'audio' in card.modalities and window.audio is not None)
        visual_p = _head_scores(result.visual_logits, card.visual_logit_scale,
                                'visual' in card.modalities and window.frames is not None)
        flags = set(window.flags)
        if not is_event:
            flags.add(FLAG_NO_EVENT)
        if is_conflict(audio_p, visual_p, self.labels, card.no_event_label, card.conflict_threshold):
            flags.add(FLAG_CONFLICT)
        (audio_k, audio_conf), (visual_k, visual_conf) = _top(audio_p), _top(visual_p)
        return Prediction(
            start_ns=window.start_ns, end_ns=window.end_ns, class_id=k, label=label,
            confidence=confidence, scores=scores, labels=self.labels, model_name=self.model_name,
            audio_class_id=audio_k, audio_confidence=audio_conf, visual_class_id=visual_k,
            visual_confidence=visual_conf, flags=flags, is_event=is_event, preprocess_s=t1 - t0,
            inference_s=t2 - t1)
