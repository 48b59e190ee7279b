"""What the microphone and camera drivers share: the device error and their ``main``."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


class DeviceError(RuntimeError):
    """A capture device or its library is missing; the message names what and how to fix it."""


def run_driver(make_node: Callable[[], object], name: str, args: list[str] | None = None) -> int:
    """Create, start and spin one driver node; 1 (after ONE error line) when it cannot start.

    ``make_node()`` builds the node (``ValueError`` for bad parameters); its ``start()`` opens the device
    (:class:`DeviceError`), and ``stop()`` releases it.
    """
    rclpy.init(args=args)
    code = 0
    node = None
    try:
        node = make_node()
        node.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (DeviceError, ValueError) as exc:
        logger = node.get_logger() if node is not None else rclpy.logging.get_logger(name)
        logger.error(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        from .classifier_node import interrupts_ignored
        with interrupts_ignored():
            if node is not None:
                node.stop()
                node.destroy_node()
            rclpy.try_shutdown()
    return code
