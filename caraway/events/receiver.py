"""``EventReceiver``: listens to the ``celeryev`` exchange with a queue of its own.

Handlers are called with each event dict, by its ``type``; the handler under ``"*"`` gets
every event. Batches (``task.multi``) arrive as single events, in the order sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from caraway.control.mailbox import clock_of
from caraway.engines.registry import fanout_of
from caraway.events.event import EXCHANGE, read_events, receiver_binding
from caraway.exceptions import DecodeError

if TYPE_CHECKING:
    from types import TracebackType

    from caraway.app import Caraway
    from caraway.engines.base.fanout import Subscription

logger = logging.getLogger("caraway.events")

Handler = Callable[[dict[str, Any]], Any]
#: Longest one read blocks, so ``should_stop`` is honoured within this many seconds.
READ_SLICE = 0.5


class EventReceiver:
    def __init__(
        self,
        app: Caraway,
        handlers: Mapping[str, Handler] | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        queue_prefix: str | None = None,
        accept: Any = None,
    ) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.routing_key = routing_key
        self.node_id = node_id or str(uuid.uuid4())
        self.queue = f"{queue_prefix or app.conf.event_queue_prefix}.{self.node_id}"
        self.should_stop = False
        self._subscription: Subscription | None = None

    def __enter__(self) -> EventReceiver:
        self.subscribe()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def subscribe(self) -> None:
        """Bind the receiver's queue now: events sent from here on are received."""
        if self._subscription is None:
            conf = self.app.conf
            binding = receiver_binding(
                self.queue, self.routing_key, conf.event_queue_expires, conf.event_queue_ttl
            )
            self._subscription = fanout_of(self.app).subscribe(EXCHANGE, binding)

    def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()

    def wakeup_workers(self) -> None:
        """Ask every worker for a heartbeat now, so a new view fills at once."""
        self.app.control.broadcast("heartbeat")

    def process(self, event_type: str, event: dict[str, Any]) -> None:
        handler = self.handlers.get(event_type) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Events as they come, until ``limit`` events, ``timeout`` s, or ``should_stop``."""
        self.subscribe()
        assert self._subscription is not None
        if wakeup:
            self.wakeup_workers()
        deadline = None if timeout is None else time.monotonic() + timeout
        clock = clock_of(self.app)
        seen = 0
        while not self.should_stop:
            wait = READ_SLICE if deadline is None else min(READ_SLICE, deadline - time.monotonic())
            if wait <= 0:
                return
            for message in self._subscription.get(wait):
                try:
                    events = read_events(message)
                except DecodeError as exc:
                    logger.warning("Ignoring an event that cannot be decoded: %s", exc)
                    continue
                for event in events:
                    clock.adjust(int(event.get("clock") or 0))
                    yield event
                    seen += 1
                    if limit is not None and seen >= limit:
                        return

    def capture(
        self, limit: int | None = None, timeout: float | None = None, wakeup: bool = True
    ) -> None:
        """Call the handlers for each event, as ``itercapture`` yields them."""
        for event in self.itercapture(limit, timeout, wakeup):
            self.process(event["type"], event)
