"""The shared no-event / acceptance decision (av_snn_ros.decision), per the perception contract."""
import numpy as np
import pytest

from av_snn_ros.decision import NO_EVENT_CLASS_ID, NO_EVENT_LABEL, decide, is_conflict

LABELS = ['happy', 'sad', 'none']
DIGITS = [str(d) for d in range(3)]


def test_accepted_event_reports_its_class_and_probability():
    d = decide(np.array([0.7, 0.2, 0.1]), LABELS, 'none', 0.5)
    assert d == (0, 'happy', pytest.approx(0.7), True)


def test_background_class_on_top_is_no_event_with_p_none():
    d = decide(np.array([0.3, 0.1, 0.6]), LABELS, 'none', 0.0)
    assert d == (2, NO_EVENT_LABEL, pytest.approx(0.6), False)


def test_event_below_threshold_is_rejected_with_p_none_as_confidence():
    d = decide(np.array([0.45, 0.35, 0.2]), LABELS, 'none', 0.5)
    assert d == (2, NO_EVENT_LABEL, pytest.approx(0.2), False)
    # the threshold is inclusive
    assert decide(np.array([0.5, 0.3, 0.2]), LABELS, 'none', 0.5).is_event


def test_model_without_background_class_rejects_to_minus_one():
    d = decide(np.array([0.5, 0.3, 0.2]), DIGITS, None, 0.6)
    assert d == (NO_EVENT_CLASS_ID, NO_EVENT_LABEL, pytest.approx(0.5), False)
    assert decide(np.array([0.5, 0.3, 0.2]), DIGITS, None, 0.0) == (0, '0', pytest.approx(0.5), True)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='no_event_label'):
        decide(np.array([0.5, 0.5, 0.0]), DIGITS, 'none')
    with pytest.raises(ValueError, match='accept_threshold'):
        decide(np.array([0.5, 0.5, 0.0]), DIGITS, None, 1.5)
    with pytest.raises(ValueError, match='one probability per label'):
        decide(np.array([0.5, 0.5]), DIGITS)
    with pytest.raises(ValueError, match='NaN'):
        decide(np.array([np.nan, 0.5, 0.5]), DIGITS)


def test_conflict_needs_two_confident_heads_naming_different_event_classes():
    a, v = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.9, 0.05])
    assert is_conflict(a, v, LABELS, 'none', 0.8)
    assert not is_conflict(a, a, LABELS, 'none', 0.8)                      # agree
    assert not is_conflict(a, np.array([0.3, 0.6, 0.1]), LABELS, 'none', 0.8)   # one head unsure
    assert not is_conflict(a, np.array([0.05, 0.05, 0.9]), LABELS, 'none', 0.8)  # one head says none
    assert not is_conflict(a, None, LABELS, 'none', 0.8)                   # a missing head never conflicts
