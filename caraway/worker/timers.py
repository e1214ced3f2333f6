"""A timer thread: run callbacks at a time, or every N seconds, on an injectable clock."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from caraway.utils.time import SYSTEM_CLOCK, Clock

logger = logging.getLogger("caraway.worker")


class Timer:
    """Runs callbacks in one background thread; a failing callback is logged, not fatal."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, name: str = "caraway-timer") -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], Any], float | None]] = []
        self._counter = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_at(self, when: float, fun: Callable[[], Any]) -> None:
        """Run ``fun`` when the clock's ``time()`` reaches ``when`` (seconds since the epoch)."""
        self._push(when, fun, None)

    def call_later(self, delay: float, fun: Callable[[], Any]) -> None:
        self._push(self.clock.time() + delay, fun, None)

    def call_repeatedly(self, interval: float, fun: Callable[[], Any]) -> None:
        self._push(self.clock.time() + interval, fun, interval)

    def _push(self, when: float, fun: Callable[[], Any], interval: float | None) -> None:
        with self._changed:
            heapq.heappush(self._heap, (when, next(self._counter), fun, interval))
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped:
                    delay = self._heap[0][0] - self.clock.time() if self._heap else 1.0
                    if self._heap and delay <= 0:
                        break
                    self._changed.wait(min(max(delay, 0.001), 1.0))
                if self._stopped:
                    return
                when, _, fun, interval = heapq.heappop(self._heap)
                if interval is not None:
                    heapq.heappush(
                        self._heap, (when + interval, next(self._counter), fun, interval)
                    )
            try:
                fun()
            except Exception:
                logger.exception("Timer callback %r failed", fun)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._heap.clear()
            self._changed.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
