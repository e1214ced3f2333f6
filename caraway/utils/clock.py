"""A Lamport clock, as Celery stamps control messages and events with one."""

from __future__ import annotations

import threading


class LamportClock:
    """Ticks on every send; on receipt jumps past the sender's value (``adjust``)."""

    def __init__(self, initial: int = 0) -> None:
        self.value = initial
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        with self._lock:
            self.value = max(self.value, int(other)) + 1
            return self.value
