"""/diagnostics follows diagnostic_updater: status ``"<node name>: <task>"`` (fully qualified with
``diagnostic_updater.use_fqn``), period from ``diagnostic_updater.period``."""
from __future__ import annotations

import threading

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from av_snn_ros.ros import diagnostic_conventions
from av_snn_ros.ros.params import param_specs
from runtime_helpers import Spinner, classifier, make_card, private_namespace

TIMEOUT_S = 60.0


@pytest.fixture(scope='module')
def card_path(tmp_path_factory):
    return make_card(tmp_path_factory)


def test_status_name_forms():
    assert diagnostic_conventions.status_name('av_classifier', '/robot1/av_classifier', 'pipeline') == \
        'av_classifier: pipeline'
    assert diagnostic_conventions.status_name('av_classifier', '/robot1/av_classifier', 'pipeline', True) == \
        '/robot1/av_classifier: pipeline'


def test_period_parameter_is_diagnostic_updaters():
    specs = {s.name: s for s in param_specs()}
    # rclcpp's diagnostic_updater::Updater declares exactly these (a double in seconds, default 1.0)
    assert specs['diagnostic_updater.period'].default == 1.0
    assert specs['diagnostic_updater.use_fqn'].default is False


def test_node_publishes_updater_style_names(ros_context, card_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from av_snn_ros.ros import qos
    ns = private_namespace('diag')
    node = classifier(ros_context, card_path, {'diagnostic_updater.period': 0.2, 'backend.name': 'onnxruntime',
                                               'diagnostic_updater.use_fqn': False}, namespace=ns)
    import rclpy
    probe = rclpy.create_node('diag_probe', context=ros_context)
    names: list[str] = []
    cond = threading.Condition()

    def on_diag(msg):
        with cond:
            names.extend(s.name for s in msg.status)
            cond.notify_all()

    probe.create_subscription(DiagnosticArray, '/diagnostics', on_diag, qos.diagnostics_qos())

    def wait_for(name):
        with cond:
            assert cond.wait_for(lambda: name in names, timeout=TIMEOUT_S), f'no status {name!r}: {set(names)}'

    with Spinner(ros_context, node, probe):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        wait_for('av_classifier: pipeline')
        assert not any(n.startswith(ns.strip('/')) or n.startswith(ns) for n in names), names
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        node.set_parameters([Parameter('diagnostic_updater.use_fqn', value=True)])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        wait_for(f'{ns}/av_classifier: pipeline')
        node.trigger_deactivate()
    probe.destroy_node()
    node.destroy_node()
