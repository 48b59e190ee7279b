"""Replay scoring (pure) and the replay through the real node graph (remapping, parity with av-snn eval)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from av_snn_ros.replay import scoring
from av_snn_ros.replay.replay import ReplayError, _check_topics, parse_remaps

S = 1_000_000_000
LABELS = [str(d) for d in range(10)]


def span(i, cls):
    return scoring.Span(i * S, (i + 1) * S, cls, str(cls))


def pred(start_s, cls, latency=0.01, length_s=1.0):
    return scoring.Prediction(int(start_s * S), int((start_s + length_s) * S), cls, 0.9, str(cls), latency)


# ------------------------------------------------------------------------------------------ scoring

def test_each_span_takes_the_most_overlapping_window():
    spans = [span(0, 3), span(1, 4), span(2, 5)]
    # hop 0.5 s: aligned windows at 0, 1, 2 plus straddling ones at 0.5, 1.5 (wrong classes)
    preds = [pred(0, 3), pred(0.5, 9), pred(1, 4), pred(1.5, 9), pred(2, 1)]
    matches = scoring.match_predictions(spans, preds)
    assert [m.prediction.start_ns for m in matches] == [0, 1 * S, 2 * S]
    assert [m.correct for m in matches] == [True, True, False]
    assert [m.overlap_ns for m in matches] == [S, S, S]


def test_ties_go_to_the_earlier_window_and_unmatched_spans_are_missed():
    spans = [span(0, 1), span(5, 2)]
    preds = [pred(-0.5, 7), pred(0.5, 1)]               # both overlap span 0 by half
    matches = scoring.match_predictions(spans, preds)
    assert matches[0].prediction.class_id == 7 and not matches[0].correct
    assert matches[1].prediction is None and not matches[1].correct


def test_score_accuracy_recall_confusion_and_missed():
    spans = [span(0, 0), span(1, 0), span(2, 1), span(3, 2), span(10, 2)]
    preds = [pred(0, 0, 0.010), pred(1, 1, 0.020), pred(2, 1, 0.030), pred(3, 2, 0.040), pred(20, 5, 0.050)]
    report = scoring.score(spans, preds, LABELS)
    assert report['accuracy'] == pytest.approx(3 / 5)               # the missed span counts as wrong
    assert (report['correct'], report['missed'], report['num_spans']) == (3, 1, 5)
    assert report['per_class_recall']['0'] == pytest.approx(0.5)
    assert report['per_class_recall']['1'] == 1.0
    assert report['per_class_recall']['2'] == pytest.approx(0.5)
    assert report['per_class_recall']['7'] is None                  # no span of that class
    cm = np.array(report['confusion_matrix'])
    assert cm.shape == (10, 11) and cm.sum() == 5
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[2, 10] == 1
    assert report['unmatched_predictions'] == 1                     # the window at 20 s
    lat = report['latency_s']
    assert lat['count'] == 5 and lat['p50'] == pytest.approx(0.030) and lat['max'] == pytest.approx(0.050)
    json.dumps(report)                                              # JSON-ready


def test_percentiles_ignore_missing_values():
    assert scoring.percentiles([]) == {'p50': None, 'p95': None, 'p99': None}
    p = scoring.percentiles([float('nan'), 1.0, 2.0, 3.0, None])
    assert p['p50'] == 2.0 and p['p95'] == pytest.approx(2.9)            # linear interpolation


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match='empty ground-truth span'):
        scoring.score([scoring.Span(S, S, 1)], [], LABELS)
    with pytest.raises(ValueError, match='outside'):
        scoring.score([span(0, 12)], [pred(0, 1)], LABELS)
    with pytest.raises(ValueError, match='outside'):
        scoring.score([span(0, 1)], [pred(0, 11)], LABELS)
    with pytest.raises(ValueError, match='labels'):
        scoring.score([], [], [])
    assert scoring.score([], [], LABELS)['accuracy'] is None


# ------------------------------------------------------------------------------------------ topics

def test_parse_remaps():
    assert parse_remaps(['/camera/image_raw:=/image', 'mic:=audio']) == {'/camera/image_raw': '/image',
                                                                          '/mic': '/audio'}
    for bad in ('/a', ':=/b', '/a:='):
        with pytest.raises(ValueError, match='bad remap'):
            parse_remaps([bad])


def test_topic_check_explains_missing_inputs():
    topics = {'/camera/image_raw': 'sensor_msgs/msg/Image', '/mic/audio': 'av_snn_msgs/msg/AudioChunk'}
    with pytest.raises(ReplayError, match='--remap /camera/image_raw:=/image'):
        _check_topics(topics, {})
    mapping = _check_topics(topics, {'/camera/image_raw': '/image', '/mic/audio': '/audio'})
    assert mapping == {'/camera/image_raw': '/image', '/mic/audio': '/audio'}
    with pytest.raises(ReplayError, match='does not have'):
        _check_topics(topics, {'/nope': '/image'})
