"""An audio-only model card (``modalities: [audio]``) end to end: the node subscribes to audio only, windows
slide over audio alone, the model gets the contract's missing-image input, and Classification carries no
visual head (-1 / 0). Also through ``av-snn run --card DIR`` in its own process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from av_snn_ros.backends.torch_backend import TorchBackend
from av_snn_ros.model_card import ModelCard
from av_snn_ros.prediction import softmax
from av_snn_ros.preprocessing import preprocess_window
from av_snn_ros.ros.conversions import stamp_to_ns
from runtime_helpers import (Probe, Spinner, audio_only_card, child_process, isolated, private_namespace,
                             recording, robot_stream, source_env)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENTS = 4
REPLAY = {'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable', 'qos.sensor.depth': 2000,
          'inference.queue_size': 100, 'diagnostic_updater.period': 0.2, 'backend.threads': 1}
#: torch vs onnxruntime on the same input (export.PARITY_ATOL); torch vs torch agrees to rounding
SCORE_ATOL = {'torch': 1e-5, 'onnxruntime': 1e-4}


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return audio_only_card(tmp_path_factory)


@pytest.fixture(scope='module')
def card(card_path):
    card = ModelCard.load(card_path)
    assert card.modalities == ('audio',) and card.modality_heads == ('audio',)
    return card


@pytest.fixture(scope='module')
def rec(card, data_root):
    return recording(card.preprocessing, data_root, SEGMENTS)


@pytest.fixture(scope='module')
def audio_events(rec, card):
    """What a robot with a microphone only delivers: 20 ms audio chunks, no camera frames at all."""
    return [e for e in robot_stream(rec, card.preprocessing) if e[1] == 'audio']


@pytest.fixture(scope='module')
def expected_scores(card, rec) -> np.ndarray:
    """Offline: each segment's audio with no image (``frames=None``: the missing-image input), torch."""
    cfg = card.preprocessing
    backend = TorchBackend(card, threads=1, device='cpu')
    n = cfg.window_samples
    out = []
    for i in range(SEGMENTS):
        a, v = preprocess_window(rec.audio[i * n:(i + 1) * n], None, cfg)
        out.append(softmax(backend.infer(a[:, None], v[:, None]).logits[0] * card.logit_scale))
    return np.stack(out)


def _check_messages(msgs, card, rec, expected_scores, atol: float) -> None:
    by_start = {stamp_to_ns(m.window_start): m for m in msgs}
    assert sorted(by_start) == [rec.segment_start(i) for i in range(SEGMENTS)]
    for i in range(SEGMENTS):
        m = by_start[rec.segment_start(i)]
        np.testing.assert_allclose(m.scores, expected_scores[i], atol=atol)
        assert m.class_id == int(np.argmax(m.scores)) and m.label == card.labels[m.class_id]
        assert (m.visual_class_id, m.visual_confidence) == (-1, 0.0)
        assert m.audio_class_id == m.class_id and m.audio_confidence > 0     # the single head is the audio one
        assert list(m.flags) == []                   # no camera is not a missing camera


@pytest.mark.parametrize('backend', ['onnxruntime', 'torch'])
def test_audio_only_card_runs_in_the_node_without_a_camera(ros_context, card, card_path, rec, audio_events,
                                                           expected_scores, backend):
    node, probe = isolated(ros_context, card_path, {**REPLAY, 'backend.name': backend})
    with Spinner(ros_context, node, probe.node):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.wait_for_subscribers(image=False)
        assert probe.image_pub.get_subscription_count() == 0
        assert probe.compressed_pub.get_subscription_count() == 0
        probe.publish_events(audio_events)
        probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS, what=f'{SEGMENTS} classifications')
        probe.wait_for(lambda p: p.diagnostics and p.diagnostics[-1].get('windows_classified') == str(SEGMENTS),
                       what='diagnostics counting every window')
        diagnostics = list(probe.diagnostics)
    _check_messages(probe.classifications, card, rec, expected_scores, SCORE_ATOL[backend])
    last = diagnostics[-1]
    assert last['windows_dropped'] == '0' and 'input.frames' not in last
    assert not any('image' in d['_message'] for d in diagnostics), [d['_message'] for d in diagnostics]


def test_av_snn_run_card_audio_only(ros_context, card, card_path, rec, audio_events, expected_scores, tmp_path):
    """``av-snn run --card DIR`` in its own process: audio in, Classification out, no image subscription."""
    ns = private_namespace('audio_only')
    cmd = [sys.executable, '-m', 'av_snn_ros.cli', 'run', '--classifier-only', '--card', str(card_path.parent),
           '--params-file', os.path.join(REPO, 'config', 'replay.yaml'), '--namespace', ns,
           '-p', 'window.hop_s:=1.0', '-p', 'backend.name:=onnxruntime']
    with child_process(cmd, tmp_path / 'node.log') as (proc, output):
        probe = Probe(ros_context, namespace=ns)
        with Spinner(ros_context, probe.node):
            probe.wait_for_subscribers(timeout=120, image=False)    # the child imports torch, loads the model
            assert probe.image_pub.get_subscription_count() == 0
            probe.publish_events(audio_events)
            probe.wait_for(lambda p: len(p.classifications) >= SEGMENTS, timeout=120,
                           what='classifications from the other process')
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert 'Traceback' not in output[0], output[0]
    _check_messages(probe.classifications, card, rec, expected_scores, SCORE_ATOL['onnxruntime'])


def test_demo_with_an_audio_only_card_needs_no_camera(card_path, tmp_path):
    """``av-snn run --demo --card DIR``: an audio-only card starts the microphone only (here missing)."""
    params = tmp_path / 'demo.yaml'
    params.write_text(Path(REPO, 'config', 'demo.yaml').read_text()
                      .replace("device: ''", "device: 'no such microphone'")
                      .replace("device: '0'", "device: '/nonexistent/camera.avi'"))
    proc = subprocess.run([sys.executable, '-m', 'av_snn_ros.cli', 'run', '--demo', '--card', str(card_path),
                           '--params-file', str(params)], env=source_env(), capture_output=True, text=True, timeout=120)
    err = proc.stderr + proc.stdout
    assert proc.returncode == 1, err
    assert '--demo needs a microphone:' in err and 'microphone:' in err
    assert 'camera' not in err.lower() and 'Traceback' not in err
