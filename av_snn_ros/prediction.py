"""One window -> one prediction: shared preprocessing, a backend call and softmax (ROS-free).

This is the whole per-window inference step of the node, kept out of the node so it can be tested and
benchmarked without ROS. The node runs it on its inference worker thread, never in a subscription callback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .backends.base import InferenceBackend
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
    """What the node publishes for one window (probabilities, per-modality heads, timing)."""

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
    preprocess_s: float = 0.0
    inference_s: float = 0.0


def _head(logits: np.ndarray | None, scale: float) -> tuple[int, float]:
    if logits is None:
        return NO_HEAD, 0.0
    p = softmax(logits[0] * scale)
    k = int(p.argmax())
    return k, float(p[k])


class Predictor:
    """``predictor(window) -> Prediction`` with the card's preprocessing and labels on ``backend``."""

    def __init__(self, backend: InferenceBackend, card: ModelCard) -> None:
        self.backend = backend
        self.cfg = card.preprocessing
        self.labels = list(card.labels)
        self.model_name = f'{card.model}/{card.name}'
        self.logit_scale = card.logit_scale

    def __call__(self, window: Window) -> Prediction:
        t0 = time.perf_counter()
        audio, visual = preprocess_window(window.audio, window.frames, self.cfg)
        t1 = time.perf_counter()
        result = self.backend.infer(audio[:, None], visual[:, None])     # add batch: (T, 1, C, H, W)
        t2 = time.perf_counter()
        scores = softmax(result.logits[0] * self.logit_scale)
        if scores.shape != (len(self.labels),):
            raise ValueError(f'model returned {scores.shape[0]} scores for {len(self.labels)} labels')
        k = int(scores.argmax())
        audio_k, audio_p = _head(result.audio_logits, self.logit_scale)
        visual_k, visual_p = _head(result.visual_logits, self.logit_scale)
        return Prediction(
            start_ns=window.start_ns, end_ns=window.end_ns, class_id=k, label=self.labels[k],
            confidence=float(scores[k]), scores=scores, labels=self.labels, model_name=self.model_name,
            audio_class_id=audio_k, audio_confidence=audio_p, visual_class_id=visual_k,
            visual_confidence=visual_p, flags=set(window.flags), preprocess_s=t1 - t0, inference_s=t2 - t1)
