"""Predictor: one window -> published numbers, checked against hand-computed softmax values.

Every published confidence (fused and per modality) is ``softmax(logit_scale * logits)`` of the card:
the temperature is fitted on validation data for all heads alike, so a head published without it would
be a different, uncalibrated number that still lies in (0, 1].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from av_snn_ros.backends.base import InferenceBackend, InferenceResult
from av_snn_ros.model_card import ModelCard
from av_snn_ros.prediction import NO_HEAD, Predictor
from av_snn_ros.preprocessing import PreprocessConfig
from av_snn_ros.windowing import Window

CFG = PreprocessConfig(image_size=(16, 16), audio_size=(16, 16))
SCALE = 3.0


class FixedBackend(InferenceBackend):
    """Returns preset logits and records the input shapes it was given."""

    name = 'fixed'

    def __init__(self, result: InferenceResult) -> None:
        super().__init__()
        self.result = result
        self.shapes: list[tuple] = []

    def infer(self, audio: np.ndarray, visual: np.ndarray) -> InferenceResult:
        self.shapes.append((audio.shape, visual.shape))
        return self.result


def _card(scale: float = SCALE) -> ModelCard:
    return ModelCard(path=Path('card.yaml'), name='fixed', model='fixed', labels=['a', 'b', 'c'],
                     preprocessing=CFG, weights=Path('w.pt'), weights_sha256='', logit_scale=scale)


def _window() -> Window:
    frame = np.zeros((20, 20), np.uint8)
    return Window(start_ns=5, end_ns=5 + 10**9, audio=np.zeros(CFG.window_samples, np.float32),
                  frames=[frame] * CFG.timesteps, flags={'audio_gap'})


def test_every_published_confidence_is_softmax_of_the_scaled_logits():
    backend = FixedBackend(InferenceResult(logits=np.array([[2.0, 1.0, 0.0]], np.float32),
                                           audio_logits=np.array([[0.0, 0.5, 0.0]], np.float32),
                                           visual_logits=np.array([[1.0, 0.0, 0.0]], np.float32)))
    p = Predictor(backend, _card())(_window())
    # by hand, with logit_scale 3: fused (6, 3, 0), audio (0, 1.5, 0), visual (3, 0, 0)
    fused = 1 / (1 + math.exp(-3) + math.exp(-6))
    audio = math.exp(1.5) / (2 + math.exp(1.5))
    visual = math.exp(3) / (math.exp(3) + 2)
    assert (p.class_id, p.label, p.audio_class_id, p.visual_class_id) == (0, 'a', 1, 0)
    assert p.confidence == pytest.approx(fused, rel=1e-6)
    assert p.audio_confidence == pytest.approx(audio, rel=1e-6)       # 0.6914; unscaled it would be 0.4519
    assert p.visual_confidence == pytest.approx(visual, rel=1e-6)     # 0.9094; unscaled it would be 0.5761
    np.testing.assert_allclose(p.scores, [fused, math.exp(-3) * fused, math.exp(-6) * fused], rtol=1e-6)
    assert (p.start_ns, p.end_ns, p.flags, p.model_name) == (5, 5 + 10**9, {'audio_gap'}, 'fixed/fixed')
    T = CFG.timesteps
    assert backend.shapes == [((T, 1, 1, 16, 16), (T, 1, 1, 16, 16))]     # one window, batch of one


def test_a_missing_modality_head_is_published_as_no_head():
    backend = FixedBackend(InferenceResult(logits=np.array([[0.0, 0.0, 1.0]], np.float32)))
    p = Predictor(backend, _card(scale=1.0))(_window())
    assert p.class_id == 2 and p.confidence == pytest.approx(math.e / (2 + math.e), rel=1e-6)
    assert (p.audio_class_id, p.audio_confidence, p.visual_class_id, p.visual_confidence) == (NO_HEAD, 0.0,
                                                                                              NO_HEAD, 0.0)


def test_scores_that_do_not_fit_the_labels_are_an_error():
    backend = FixedBackend(InferenceResult(logits=np.zeros((1, 4), np.float32)))
    with pytest.raises(ValueError, match='4 scores for 3 labels'):
        Predictor(backend, _card())(_window())
