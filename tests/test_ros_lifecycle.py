"""Lifecycle of av_classifier: transitions over ~/change_state, bad parameters, params files, and the
whole graph as a separate process started by ``av-snn run``."""
from __future__ import annotations

import os
import signal
import sys
import threading

import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node

from av_snn_ros.model_card import ModelCard
from runtime_helpers import (DEFAULT_TIMEOUT_S, Probe, Spinner, child_process, classifier, isolated, make_card,
                             private_namespace, recording, robot_stream)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {'window.hop_s': 1.0, 'qos.sensor.reliability': 'reliable', 'qos.sensor.depth': 2000,
        'inference.queue_size': 100, 'diagnostic_updater.period': 0.2, 'window.max_buffer_s': 30.0,
        'window.modality_timeout_s': 20.0}


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


@pytest.fixture(scope='module')
def events(card_path, data_root):
    cfg = ModelCard.load(card_path).preprocessing
    return robot_stream(recording(cfg, data_root, 2), cfg, fps=15)


def _call(client_node: Node, client, request, timeout: float = DEFAULT_TIMEOUT_S):
    if not client.wait_for_service(timeout_sec=timeout):
        raise AssertionError(f'service {client.srv_name} not available')
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        raise AssertionError(f'no answer from {client.srv_name}')
    return future.result()


def _change(node, client, transition_id: int) -> bool:
    return _call(node, client, ChangeState.Request(transition=Transition(id=transition_id))).success


def _state(node, client) -> int:
    return _call(node, client, GetState.Request()).current_state.id


def test_transitions_over_change_state_service(ros_context, card_path, events):
    node, probe = isolated(ros_context, card_path, FAST)
    change = probe.node.create_client(ChangeState, 'av_classifier/change_state')
    get = probe.node.create_client(GetState, 'av_classifier/get_state')
    with Spinner(ros_context, node, probe.node):
        assert _state(probe.node, get) == State.PRIMARY_STATE_UNCONFIGURED
        assert probe.image_pub.get_subscription_count() == 0
        assert _change(probe.node, change, Transition.TRANSITION_CONFIGURE)
        assert _state(probe.node, get) == State.PRIMARY_STATE_INACTIVE
        assert _change(probe.node, change, Transition.TRANSITION_ACTIVATE)
        assert _state(probe.node, get) == State.PRIMARY_STATE_ACTIVE
        probe.wait_for_subscribers()
        probe.publish_events(events)
        probe.wait_for(lambda p: len(p.classifications) >= 2, what='classifications while active')

        assert _change(probe.node, change, Transition.TRANSITION_DEACTIVATE)
        assert _state(probe.node, get) == State.PRIMARY_STATE_INACTIVE
        probe.wait_for_subscribers(present=False)
        assert _change(probe.node, change, Transition.TRANSITION_CLEANUP)
        assert _state(probe.node, get) == State.PRIMARY_STATE_UNCONFIGURED
        assert node.choice is None and node.card is None            # backend released

        # a second configure/activate cycle works and classifies the same data again
        assert _change(probe.node, change, Transition.TRANSITION_CONFIGURE)
        assert _change(probe.node, change, Transition.TRANSITION_ACTIVATE)
        probe.wait_for_subscribers()
        before = len(probe.classifications)
        probe.publish_events(events)
        probe.wait_for(lambda p: len(p.classifications) >= before + 2, what='classifications after re-activation')
        assert _change(probe.node, change, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert _state(probe.node, get) == State.PRIMARY_STATE_FINALIZED
    first, second = probe.classifications[:2], probe.classifications[before:before + 2]
    assert [m.class_id for m in first] == [m.class_id for m in second]


@pytest.mark.parametrize('overrides, message', [
    ({'window.gap_policy': 'sometimes'}, 'window.gap_policy'),
    ({'window.hop_s': -1.0}, 'window.hop_s'),                     # outside the advertised range
    ({'window.hop_s': 'fast'}, 'window.hop_s'),                   # wrong type
    ({'window.max_buffer_s': 1.0}, 'window.max_buffer_s'),        # in range, too short for the card's W
    ({'window.hopp_s': 0.5}, 'unknown parameter'),                # a typo in a params file
    ({'model.card': '/nonexistent/card.yaml'}, 'cannot read model card'),
    ({'backend.name': 'tensorrt'}, '(?i)tensorrt'),              # pinned backend that cannot run here
    ({'backend.native_kernels': True}, 'native_kernels: needs backend.name torch'),   # auto + torch-only option
])
def test_bad_parameter_fails_configure_with_clear_message(ros_context, card_path, capfd, overrides, message):
    if overrides.get('backend.name') == 'tensorrt':
        pytest.importorskip('onnxruntime')
        try:
            import tensorrt  # noqa: F401
            pytest.skip('TensorRT is installed here')
        except ImportError:
            pass
    node = classifier(ros_context, card_path, overrides)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == 'unconfigured'
        err = capfd.readouterr().err
        assert 'configure failed' in err
        import re
        assert re.search(message, err), err
    finally:
        node.destroy_node()


@pytest.mark.parametrize('name', ['robot.yaml', 'replay.yaml', 'demo.yaml'])
def test_shipped_params_files_configure(ros_context, card_path, name):
    path = os.path.join(REPO, 'config', name)
    from av_snn_ros.ros.classifier_node import AvClassifierNode
    node = AvClassifierNode(context=ros_context, cli_args=['--ros-args', '--params-file', path,
                                                           '-p', f'model.card:={card_path}'])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.autostart == (name != 'robot.yaml')
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_av_snn_run_classifier_in_its_own_process(ros_context, card_path, events, tmp_path):
    """Cross-process: `av-snn run --classifier-only` with remapped topics, classifications received,
    Ctrl-C exits cleanly with status 0."""
    ns = private_namespace('robot')
    cmd = [sys.executable, '-m', 'av_snn_ros.cli', 'run', '--classifier-only',
           '--params-file', os.path.join(REPO, 'config', 'replay.yaml'),
           '--remap', f'image:={ns}/cam/image', '--remap', f'audio:={ns}/mic/audio', '--namespace', ns,
           '-p', f'model.card:={card_path}', '-p', 'window.hop_s:=1.0', '-p', 'window.max_buffer_s:=30.0',
           '-p', 'window.modality_timeout_s:=20.0',
           '-p', 'backend.name:=onnxruntime']
    with child_process(cmd, tmp_path / 'node.log') as (proc, output):
        probe = Probe(ros_context, namespace=ns)
        # the probe publishes on the remapped absolute topics; the node lives in the namespace
        from av_snn_msgs.msg import AudioChunk, Classification
        from sensor_msgs.msg import Image
        from av_snn_ros.ros import qos
        probe.image_pub = probe.node.create_publisher(Image, f'{ns}/cam/image', qos.driver_qos(1000))
        probe.audio_pub = probe.node.create_publisher(AudioChunk, f'{ns}/mic/audio', qos.driver_qos(1000))
        probe.cls_sub = probe.node.create_subscription(Classification, f'{ns}/classification', probe._on_cls,
                                                       qos.output_qos())
        with Spinner(ros_context, probe.node):
            probe.wait_for_subscribers(timeout=120)      # the child imports torch and loads the model
            probe.publish_events(events)
            probe.wait_for(lambda p: len(p.classifications) >= 2, timeout=120,
                           what='classifications from the other process')
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert 'Traceback' not in output[0], output[0]
    assert all(m.model_name for m in probe.classifications)


def test_invalid_runtime_parameter_update_is_refused_with_reason(ros_context, card_path):
    from rclpy.parameter import Parameter
    node = classifier(ros_context, card_path)
    try:
        result, = node.set_parameters([Parameter('window.gap_policy', value='sometimes')])
        assert not result.successful and 'window.gap_policy' in result.reason
        result, = node.set_parameters([Parameter('window.hop_s', value=1)])          # an int is fine
        assert result.successful and node.get_parameter('window.hop_s').value == 1
        result, = node.set_parameters([Parameter('model.card', value='/elsewhere')])  # read-only
        assert not result.successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.settings.window.hop_s == 1.0
    finally:
        node.destroy_node()
