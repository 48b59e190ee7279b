"""Process lifecycle of the node executables: init without rclpy's signal handlers, spin, stop on a signal.

rclpy's own SIGINT handling runs in a C signal handler plus a guard condition that the executor owns; when
Ctrl-C arrives while ``executor.shutdown()`` frees that guard condition, the handler can trigger a freed
handle (seen as SIGSEGV in 2 of 40 Ctrl-Cs). The executables therefore own their signals: SIGINT and
SIGTERM only set an event, the main thread spins in short slices and, once the event is set, tears down
in a fixed order while the context is still valid (lifecycle shutdown first, then the executor, then
rclpy). No rclpy signal machinery is ever installed, so there is nothing to race.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

#: longest a stop request waits for the spinning thread to notice it (one wait-set slice)
SPIN_SLICE_S = 0.1
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by SIGINT/SIGTERM (or :meth:`set`); the spin loop ends at the next slice."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def install(self) -> 'StopRequest':
        """Route SIGINT and SIGTERM here (main thread only; elsewhere signals are left alone).

        Kept until the process exits: a second Ctrl-C during or after the tear-down must not reach
        Python's default handler, whose unhandled KeyboardInterrupt kills the process with SIGINT
        (exit -2, seen in 2 of 40 double Ctrl-Cs while the handlers were restored at the end).
        """
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                signal.signal(sig, self._on_signal)
        return self

    def finish(self) -> None:
        """Ignore SIGINT/SIGTERM from here on: the tear-down is done and the process only exits.

        CPython's finalisation resets Python-level handlers to the default, so a second Ctrl-C landing
        while extension modules unload (onnxruntime, torch: easily 100 ms) would kill the process with
        SIGINT (exit -2, 2 of 120 double Ctrl-Cs); an ignored signal stays ignored through it.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def init(args: list[str] | None = None) -> StopRequest:
    """``rclpy.init`` without rclpy's signal handlers, and a :class:`StopRequest` listening instead."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    return StopRequest().install()


def spin(executor: Executor, stop: StopRequest) -> None:
    """Spin ``executor`` until ``stop`` is set or the context is shut down from elsewhere."""
    try:
        while not stop.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
    except ExternalShutdownException:
        pass
