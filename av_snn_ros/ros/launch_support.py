"""What the launch files (launch/*.launch.py) share; ``launch`` is imported only when they call it."""
from __future__ import annotations


def shutdown_when_exited(target, reason: str):
    """A ``RegisterEventHandler`` that ends the launch when the process action ``target`` exits.

    Only the first such exit emits ``Shutdown``: once launch is shutting down (Ctrl-C, or another
    process already ended it) the remaining processes exit too, and a second ``Shutdown`` event makes
    launch_ros' ROS adapter raise ("Cannot shutdown a ROS adapter that is not running"), turning a
    clean end into exit code 1.
    """
    from launch.actions import RegisterEventHandler, Shutdown
    from launch.event_handlers import OnProcessExit

    def on_exit(event, context):
        return None if context.is_shutdown else [Shutdown(reason=reason)]

    return RegisterEventHandler(OnProcessExit(target_action=target, on_exit=on_exit))
