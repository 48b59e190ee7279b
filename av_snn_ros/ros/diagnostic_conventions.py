"""diagnostic_updater's conventions for the classifier's ``/diagnostics`` report (ROS 2 diagnostics 4.x).

rclcpp's ``diagnostic_updater::Updater`` names every status ``"<node name>: <task>"`` (the node's plain
name; its fully qualified name with a leading slash when the parameter ``diagnostic_updater.use_fqn`` is
true) and publishes every ``diagnostic_updater.period`` seconds (default 1.0). The node follows both, so
aggregator analyzers and rqt_robot_monitor configurations written for updater-based nodes match it.
"""
from __future__ import annotations

#: the updater's parameters, declared under these names by rclcpp's Updater too
PERIOD_PARAM = 'diagnostic_updater.period'
USE_FQN_PARAM = 'diagnostic_updater.use_fqn'
DEFAULT_PERIOD_S = 1.0
#: the classifier's single diagnostic task
PIPELINE_TASK = 'pipeline'


def status_name(node_name: str, fully_qualified_name: str, task: str, use_fqn: bool = False) -> str:
    """``DiagnosticStatus.name`` of ``task``: ``"av_classifier: pipeline"``, or with ``use_fqn``
    ``"/robot1/av_classifier: pipeline"`` (tells apart equally named nodes in different namespaces)."""
    return f'{fully_qualified_name if use_fqn else node_name}: {task}'
