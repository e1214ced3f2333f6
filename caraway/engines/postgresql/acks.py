"""Acks written by a background thread, many per statement when they come together.

``ack`` hands its tags to the thread and returns once the thread has taken them (it is then
sending them; it is busy for one round trip at most before it takes more), not once the
server confirmed: so an ack leaves before the task that follows runs, as Celery's early ack
requires (a worker killed during the task does not run it again), while acks from many pool
threads, or arriving during a round trip, share one ``DELETE``. A message whose ack has not
landed yet stays leased to this consumer (its lease renewed as usual): if the process dies
first, it runs again after its lease, as when a process dies just before acking. An ack that
fails (the server away) is kept and sent again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from caraway.exceptions import OperationalError
from caraway.utils.pid import after_fork_in_child

logger = logging.getLogger("caraway.broker")

#: Longest ``add`` waits for the thread to take its tags (it is busy one round trip at most
#: while the server answers).
HANDOFF_TIMEOUT = 5.0
#: Pause before sending again acks the server refused or could not take.
RETRY_PAUSE = 1.0


class BackgroundAcks:
    """Tags to delete, sent by one thread with ``send(tags)`` (started on first use)."""

    def __init__(self, send: Callable[[list[Any]], None]) -> None:
        self._send = send
        self._pending: list[Any] = []
        self._sending = 0  # tags taken by the thread and not yet confirmed
        self._added = self._taken = 0  # tags ever added, ever taken by the thread
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        after_fork_in_child(self._forget_parent)

    def add(self, tags: Sequence[Any]) -> None:
        with self._changed:
            self._pending.extend(tags)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="caraway-pg-acks", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
            self._added += len(tags)
            mine = self._added
            self._changed.wait_for(lambda: self._taken >= mine, HANDOFF_TIMEOUT)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                tags, self._pending = self._pending, []
                self._sending = len(tags)
                self._taken += len(tags)
                self._changed.notify_all()
            try:
                self._send(tags)
            except OperationalError as exc:
                logger.warning("Could not ack %d message(s), trying again: %s", len(tags), exc)
                with self._changed:
                    self._pending[:0] = tags
                    self._sending = 0
                    self._changed.notify_all()
                    if self._closed:
                        return
                    self._changed.wait(RETRY_PAUSE)
                continue
            with self._changed:
                self._sending = 0
                self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every ack so far is sent; False if that took longer than ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._sending, timeout)

    def close(self, timeout: float) -> None:
        """Send what is pending, then stop the thread."""
        self.flush(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's acks are the parent's; no thread was forked."""
        self._pending, self._sending, self._thread = [], 0, None
        self._added = self._taken = 0
        self._changed = threading.Condition()
