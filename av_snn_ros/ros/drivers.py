"""What the microphone and camera drivers share: the device error and their ``main``."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

from . import process


class DeviceError(RuntimeError):
    """A capture device or its library is missing; the message names what and how to fix it."""


def run_driver(make_node: Callable[[], object], name: str, args: list[str] | None = None) -> int:
    """Create, start and spin one driver node; 1 (after ONE error line) when it cannot start.

    ``make_node()`` builds the node (``ValueError`` for bad parameters); its ``start()`` opens the device
    (:class:`DeviceError`), and ``stop()`` releases it.
    """
    stop = process.init(args)
    code = 0
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = make_node()
        node.start()
        executor.add_node(node)
        process.spin(executor, stop)
    except (DeviceError, ValueError) as exc:
        logger = node.get_logger() if node is not None else rclpy.logging.get_logger(name)
        logger.error(str(exc))
        code = 1
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        stop.finish()
    return code
