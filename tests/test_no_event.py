"""The no-event contract (perception contract items 3-5): the decision, the card keys, the Predictor and
the node, which publishes a Classification for every classified window, label ``none`` for no-event."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.backends.base import InferenceBackend, InferenceResult
from av_snn_ros.decision import (FLAG_CONFLICT, FLAG_NO_EVENT, NO_EVENT_CLASS_ID, NO_EVENT_LABEL, conflict,
                                 decide)
from av_snn_ros.model_card import ModelCard, ModelFileError, sha256_file
from av_snn_ros.prediction import Predictor, softmax
from av_snn_ros.preprocessing import PreprocessConfig, missing_image_steps
from av_snn_ros.ros.conversions import stamp_to_ns
from av_snn_ros.ros.params import read_settings
from av_snn_ros.windowing import FLAG_MISSING_IMAGE, Window
from runtime_helpers import (Spinner, card_variant, isolated, make_card, offline_scores, recording,
                             robot_stream)

BG_LABELS = ['none', 'knock', 'speech']


# ------------------------------------------------------------------------------------------ decision

@pytest.mark.parametrize('scores, no_event, threshold, expected', [
    # background-class model: the event when it is on top and confident enough ...
    ([0.1, 0.7, 0.2], 'none', 0.5, (1, 'knock', 0.7, True)),
    ([0.1, 0.7, 0.2], 'none', 0.7, (1, 'knock', 0.7, True)),          # >= threshold is accepted
    # ... else no-event, with the probability of "none" as its confidence
    ([0.1, 0.7, 0.2], 'none', 0.8, (0, 'none', 0.1, False)),
    ([0.6, 0.3, 0.1], 'none', 0.0, (0, 'none', 0.6, False)),          # background on top
    # no background class: class id -1, confidence 1 - top probability
    ([0.3, 0.7], None, 0.8, (NO_EVENT_CLASS_ID, NO_EVENT_LABEL, 0.3, False)),
    ([0.3, 0.7], None, 0.0, (1, 'speech', 0.7, True)),                 # old cards: always an event
])
def test_decide_follows_the_contract(scores, no_event, threshold, expected):
    labels = BG_LABELS if no_event else BG_LABELS[1:]
    k, label, confidence, is_event = decide(np.array(scores), labels, no_event, threshold)
    assert (k, label, is_event) == expected[:2] + expected[3:]
    assert confidence == pytest.approx(expected[2], abs=1e-6)


def test_decide_rejects_scores_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match='one score per label'):
        decide(np.ones(2) / 2, BG_LABELS, 'none', 0.5)


@pytest.mark.parametrize('audio, visual, expected', [
    ([0.05, 0.9, 0.05], [0.05, 0.05, 0.9], True),       # both confident, different events
    ([0.05, 0.9, 0.05], [0.2, 0.1, 0.7], False),        # visual below the threshold
    ([0.05, 0.9, 0.05], [0.05, 0.9, 0.05], False),      # agree
    ([0.9, 0.05, 0.05], [0.05, 0.05, 0.9], False),      # one head says "nothing happening"
    ([0.05, 0.9, 0.05], None, False),                   # a missing head never conflicts
])
def test_conflict_needs_two_confident_heads_naming_different_events(audio, visual, expected):
    a = np.array(audio)
    v = None if visual is None else np.array(visual)
    assert conflict(a, v, BG_LABELS, 'none', 0.8) is expected


# ------------------------------------------------------------------------------------------ card + Predictor

def _card(tmp_path, **keys) -> ModelCard:
    """A card whose weights are a dummy file: the Predictor needs only its keys (the backend is fake)."""
    weights = tmp_path / 'model.pt'
    weights.write_bytes(b'not used')
    data = {'name': 'fake', 'model': 'fake', 'labels': BG_LABELS, 'preprocessing': {},
            'weights': 'model.pt', 'weights_sha256': sha256_file(weights), **keys}
    (tmp_path / 'card.yaml').write_text(yaml.safe_dump(data))
    return ModelCard.load(tmp_path)


class FakeBackend(InferenceBackend):
    """Fixed logits; records the inputs it was fed."""

    name = 'fake'

    def __init__(self, fused, audio=None, visual=None) -> None:
        super().__init__()
        self.out = [None if x is None else np.array([x], np.float32) for x in (fused, audio, visual)]
        self.fed: list[tuple[np.ndarray, np.ndarray]] = []

    def infer(self, audio, visual) -> InferenceResult:
        self.fed.append((audio, visual))
        return InferenceResult(*self.out)


def _window(cfg: PreprocessConfig, frames: bool = True, flags=()) -> Window:
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, cfg.window_samples).astype(np.float32)
    fr = [np.zeros((8, 8, 3), np.uint8)] * cfg.timesteps if frames else None
    return Window(start_ns=0, end_ns=10**9, audio=audio, frames=fr, flags=set(flags))


def test_card_contract_keys_default_and_validate(tmp_path):
    card = _card(tmp_path, logit_scale=3.0)
    assert card.modalities == ('audio', 'visual') and card.no_event_label is None
    assert card.accept_threshold == 0.0 and card.conflict_threshold == 0.8
    assert card.audio_logit_scale == card.visual_logit_scale == 3.0       # default: the fused scale
    for bad, key in [({'no_event_label': 'silence'}, 'no_event_label'), ({'modalities': ['audio', 'smell']},
                     'modalities'), ({'modalities': []}, 'modalities'), ({'accept_threshold': 1.5}, 'accept_threshold'),
                     ({'audio_logit_scale': 0}, 'audio_logit_scale'), ({'conflict_threshold': -0.1}, 'conflict_threshold')]:
        with pytest.raises(ModelFileError, match=key):
            _card(tmp_path, **bad)


def test_predictor_decides_with_the_card_and_the_override(tmp_path):
    card = _card(tmp_path, no_event_label='none', accept_threshold=0.6, audio_logit_scale=2.0,
                 visual_logit_scale=0.5, conflict_threshold=0.6)
    fused, a_logits, v_logits = [0.0, 1.0, 0.2], [0.0, 3.0, 0.0], [0.0, 0.0, 9.0]
    backend = FakeBackend(fused, a_logits, v_logits)
    p_fused = softmax(np.array(fused))                  # top: knock, ~0.52 < 0.6
    pred = Predictor(backend, card)(_window(card.preprocessing))
    assert (pred.class_id, pred.label, pred.is_event) == (0, 'none', False)
    assert pred.confidence == pytest.approx(p_fused[0])
    np.testing.assert_allclose(pred.scores, p_fused, rtol=1e-6)
    # the heads use their own temperatures; they disagree confidently -> conflict
    assert (pred.audio_class_id, pred.visual_class_id) == (1, 2)
    assert pred.audio_confidence == pytest.approx(softmax(2.0 * np.array(a_logits))[1])
    assert pred.visual_confidence == pytest.approx(softmax(0.5 * np.array(v_logits))[2])
    assert pred.flags == {FLAG_NO_EVENT, FLAG_CONFLICT}
    # the runtime parameter overrides the card's threshold
    pred = Predictor(backend, card, accept_threshold=0.5)(_window(card.preprocessing))
    assert (pred.class_id, pred.label, pred.is_event) == (1, 'knock', True)
    assert pred.confidence == pytest.approx(p_fused[1]) and FLAG_NO_EVENT not in pred.flags
    with pytest.raises(ValueError, match='accept_threshold'):
        Predictor(backend, card, accept_threshold=1.5)


def test_predictor_feeds_the_missing_image_and_reports_no_visual_head(tmp_path):
    card = _card(tmp_path, conflict_threshold=0.5)
    backend = FakeBackend([0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0])
    pred = Predictor(backend, card)(_window(card.preprocessing, frames=False, flags=[FLAG_MISSING_IMAGE]))
    fed_visual = backend.fed[-1][1]
    np.testing.assert_array_equal(fed_visual[:, 0], missing_image_steps(card.preprocessing))
    assert (pred.visual_class_id, pred.visual_confidence) == (-1, 0.0)
    assert pred.audio_class_id == 1
    assert pred.flags == {FLAG_MISSING_IMAGE}        # no conflict without a visual head; an event


def test_accept_threshold_parameter_negative_means_the_card():
    assert read_settings({'model.card': 'x'}).accept_threshold is None
    assert read_settings({'model.card': 'x', 'inference.accept_threshold': 0.7}).accept_threshold == 0.7
    with pytest.raises(ValueError, match='inference.accept_threshold'):
        read_settings({'model.card': 'x', 'inference.accept_threshold': 1.5})
    with pytest.raises(ValueError, match='window.modality_timeout_s'):
        read_settings({'model.card': 'x', 'window.modality_timeout_s': 0.0})


# ------------------------------------------------------------------------------------------ node

POOL = 16
SEGMENTS = 5
REPLAY = {'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable', 'qos.sensor.depth': 2000,
          'inference.queue_size': 100, 'diagnostics.period_s': 0.2, 'backend.name': 'torch',
          'backend.threads': 1, 'window.max_buffer_s': 30.0, 'window.modality_timeout_s': 20.0}
#: node and offline scores agree to float32 rounding (test_ros_classifier); a threshold this far from
#: every window's top probability decides the same on both
MIN_MARGIN = 1e-4


def test_node_publishes_no_event_windows_with_label_none(ros_context, data_root, tmp_path_factory):
    """A background-class card (the default model's class '0' relabelled ``none``) and an acceptance
    threshold between the windows' top probabilities: the node publishes every window, each exactly as
    :func:`decide` rules on the offline scores (events and no-events, class ids, confidences, flags)."""
    base = make_card(tmp_path_factory)
    labels = ['none', *ModelCard.load(base).labels[1:]]
    card_path = card_variant(base, tmp_path_factory.mktemp('bg_card'), labels=labels, no_event_label='none')
    card = ModelCard.load(card_path)
    pool = recording(card.preprocessing, data_root, POOL)
    pool_scores = offline_scores(card, pool)
    tops = pool_scores.max(axis=1)
    chosen = set(np.argsort(tops)[np.linspace(0, POOL - 1, SEGMENTS).astype(int)].tolist())   # spread tops
    chosen |= set(np.flatnonzero(pool_scores.argmax(axis=1) == 0)[:1].tolist())    # 'none' on top, if any
    segments = len(chosen)
    rec = recording(card.preprocessing, data_root, segments, indices=sorted(chosen))
    scores = offline_scores(card, rec)
    top = np.sort(scores.max(axis=1))
    gap = int(np.argmax(np.diff(top)))
    threshold = float((top[gap] + top[gap + 1]) / 2)
    assert top[gap + 1] - top[gap] > 2 * MIN_MARGIN, f'no usable threshold between the tops {top}'
    expected = [decide(s, labels, 'none', threshold) for s in scores]
    assert {e[3] for e in expected} == {True, False}, 'the test needs events and no-events'

    node, probe = isolated(ros_context, card_path, {**REPLAY, 'inference.accept_threshold': threshold})
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers()
        probe.publish_events(robot_stream(rec, card.preprocessing, fps=20))
        probe.wait_for(lambda p: len(p.classifications) >= segments, what=f'{segments} classifications')
    msgs = {stamp_to_ns(m.window_start): m for m in probe.classifications}
    assert sorted(msgs) == [rec.segment_start(i) for i in range(segments)]     # no-event windows published too
    for i, (k, label, confidence, is_event) in enumerate(expected):
        m = msgs[rec.segment_start(i)]
        assert (m.class_id, m.label) == (k, label), f'segment {i}'
        assert m.confidence == pytest.approx(confidence, abs=1e-5)
        assert (FLAG_NO_EVENT in m.flags) == (not is_event)
        np.testing.assert_allclose(m.scores, scores[i], atol=1e-5)           # the scores stay the model's
