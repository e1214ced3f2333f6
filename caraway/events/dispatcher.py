"""``EventDispatcher``: sends events to the ``celeryev`` exchange.

Events of a buffered group (``task`` in a worker, as in Celery's) are collected and sent
together as one ``task.multi`` message every ``flush_interval`` s (or once ``buffer_limit``
wait), which keeps a busy worker from paying one publish per event. Other events go at once.
A failed publish is logged and dropped: events are a best-effort view, never a reason for a
task to fail.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from caraway.control.mailbox import clock_of
from caraway.engines.registry import fanout_of
from caraway.events.event import (
    EXCHANGE,
    MULTI,
    event_message,
    group_of,
    make_event,
    routing_key,
)
from caraway.protocol import ORIGIN
from caraway.utils.log import FirstFailure

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.fanout import Fanout

logger = logging.getLogger("caraway.events")

#: Seconds buffered events may wait: short enough for live views, long enough to batch.
FLUSH_INTERVAL = 0.05
BUFFER_LIMIT = 100


class EventDispatcher:
    def __init__(
        self,
        app: Caraway,
        hostname: str | None = None,
        enabled: bool = True,
        groups: Iterable[str] | None = None,
        buffer_group: Iterable[str] | None = None,
        fanout: Fanout | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        self.app = app
        self.hostname = hostname or ORIGIN
        self.enabled = enabled
        self.groups = set(groups) if groups is not None else None
        self.buffer_group = set(buffer_group or ())
        self._fanout = fanout
        self.clock = clock_of(app)
        self.flush_interval = flush_interval
        self.buffer_limit = buffer_limit
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        #: Events that cannot be sent while the broker is away: one warning per outage.
        self._failures = FirstFailure(logger)

    @property
    def fanout(self) -> Fanout:
        """The engine given, else the app's (looked up each time: ``app.close()`` renews it)."""
        if self._fanout is not None:
            return self._fanout

        return fanout_of(self.app)

    def allows(self, event_type: str) -> bool:
        return self.enabled and (self.groups is None or group_of(event_type) in self.groups)

    def send(self, event_type: str, blind: bool = False, **fields: Any) -> dict[str, Any] | None:
        """Send (or buffer) one event; returns it, or None when its group is off."""
        if not self.allows(event_type):
            return None
        clock = 0 if blind else self.clock.forward()
        event = make_event(event_type, self.hostname, clock, **fields)
        if group_of(event_type) in self.buffer_group:
            with self._lock:
                self._buffer.append(event)
                full = len(self._buffer) >= self.buffer_limit
            self._start_flusher()
            if full:
                self._wake.set()
        else:
            self._publish(routing_key(event_type), event)
        return event

    def _publish(self, key: str, body: Any) -> None:
        try:
            self.fanout.publish(EXCHANGE, key, event_message(body, self.hostname))
        except Exception as exc:  # events are best effort: log, never break the caller
            self._failures.failed("Could not send event(s) %s: %s", key, exc)
        else:
            self._failures.recovered()

    def flush(self) -> None:
        """Send what is buffered now, as one ``<group>.multi`` message per group."""
        with self._lock:
            pending, self._buffer = self._buffer, []
        by_group: dict[str, list[dict[str, Any]]] = {}
        for event in pending:
            by_group.setdefault(group_of(event["type"]), []).append(event)
        for group, events in by_group.items():
            self._publish(f"{group}.{MULTI}", events)

    def _start_flusher(self) -> None:
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_loop, name="caraway-events", daemon=True
                    )
                    self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Send what is buffered and stop the flushing thread."""
        self._closed.set()
        self._wake.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(5)
        self.flush()
