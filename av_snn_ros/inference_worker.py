"""One inference thread fed by a small bounded mailbox: subscription callbacks never run the model.

With ``capacity=1`` (the default, for robots) the mailbox is *newest wins*: a window that arrives while
the previous one is still waiting replaces it, so the node always classifies the freshest data and never
builds up latency. A larger capacity queues windows in order and drops the *oldest* when full (useful
when replaying a bag faster than real time). Every replaced or dropped item is counted ``dropped_busy``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

from .runtime_stats import Counters, LatencyTracker

ItemT = TypeVar('ItemT')
ResultT = TypeVar('ResultT')

#: how long ``stop`` waits for the thread to finish its current item.
DEFAULT_STOP_TIMEOUT_S = 10.0


class Mailbox(Generic[ItemT]):
    """A bounded, closable queue whose ``put`` never blocks: when full, the oldest item is dropped."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self.capacity = capacity
        self._items: deque[ItemT] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: ItemT) -> ItemT | None:
        """Add ``item``; return the item it displaced (``None`` if nothing was dropped)."""
        with self._cond:
            if self._closed:
                raise RuntimeError('mailbox is closed')
            dropped = self._items.popleft() if len(self._items) >= self.capacity else None
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> ItemT | None:
        """The oldest item, waiting up to ``timeout``; ``None`` on timeout or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout=timeout):
                return None
            return self._items.popleft() if self._items else None

    def close(self) -> list[ItemT]:
        """Refuse new items, wake the consumer, and return what was still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return left

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class InferenceWorker(Generic[ItemT, ResultT]):
    """Runs ``process(item)`` on its own thread and hands ``(item, result)`` to ``on_result``.

    Exceptions from ``process`` or ``on_result`` are counted (``errors``) and passed to ``on_error``;
    the thread keeps running. Counters: ``submitted``, ``processed``, ``dropped_busy``, ``errors``.
    ``queue_wait`` holds how long each processed item waited between ``submit`` and the start of
    ``process`` (seconds): the hand-off cost, and with a busy worker the queueing delay.
    """

    def __init__(self, process: Callable[[ItemT], ResultT], on_result: Callable[[ItemT, ResultT], None],
                 on_error: Callable[[ItemT, Exception], None] | None = None, capacity: int = 1,
                 name: str = 'inference', counters: Counters | None = None) -> None:
        self._process = process
        self._on_result = on_result
        self._on_error = on_error
        self._mailbox: Mailbox[tuple[ItemT, float]] = Mailbox(capacity)   # (item, submit time)
        self._name = name
        self.counters = counters if counters is not None else Counters()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._outstanding = 0          # submitted and not yet finished or dropped
        self.queue_wait = LatencyTracker()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError('worker already started')
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, item: ItemT) -> bool:
        """Queue ``item``; return False if it displaced an unprocessed one (counted ``dropped_busy``)."""
        self.counters.inc('submitted')
        with self._idle:
            dropped = self._mailbox.put((item, time.monotonic()))
            if dropped is not None:
                self.counters.inc('dropped_busy')
                return False
            self._outstanding += 1
            return True

    def _run(self) -> None:
        while True:
            entry = self._mailbox.get()
            if entry is None:
                return
            item, submitted = entry
            self.queue_wait.add(time.monotonic() - submitted)
            try:
                result = self._process(item)
                self._on_result(item, result)
                self.counters.inc('processed')
            except Exception as exc:  # noqa: BLE001 - one bad window must not kill the node's worker
                self.counters.inc('errors')
                if self._on_error is not None:
                    self._on_error(item, exc)
            finally:
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the mailbox is empty and no item is in progress (for tests and clean shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout=timeout)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """Stop after the item in progress; return how many waiting items were discarded."""
        with self._idle:
            left = self._mailbox.close()
            self._outstanding -= len(left)
            self._idle.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return len(left)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
