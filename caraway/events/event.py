"""One event as Celery sends it (docs/celery-wire.md §7.3), and the exchange events travel on."""

from __future__ import annotations

import os
import time
from typing import Any

from caraway import serialization
from caraway.engines.base.fanout import Binding, Exchange
from caraway.protocol import Message

EXCHANGE = Exchange("celeryev", "topic", durable=True)
#: The routing key of a batch of buffered events (a JSON list body).
MULTI = "multi"


def utcoffset() -> float:
    """Hours west of UTC, as Celery 5.7 sends it (a float)."""
    return (time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone) / 3600


def group_of(event_type: str) -> str:
    """``task-succeeded`` → ``task``: events are enabled and buffered by group."""
    return event_type.partition("-")[0]


#: Celery's name for it.
group_from = group_of


def Event(type: str, _fields: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """An event dict of ``type`` stamped with the time now, as Celery's helper builds it:
    e.g. ``State().event(Event("worker-online", hostname="w1@h"))`` in a monitor's tests."""
    event = {**(_fields or {}), **fields, "type": type}
    event.setdefault("timestamp", time.time())
    return event


def routing_key(event_type: str) -> str:
    return event_type.replace("-", ".")


def make_event(event_type: str, hostname: str, clock: int, **fields: Any) -> dict[str, Any]:
    """The event dict with Celery's common fields, in the order Celery writes them."""
    event: dict[str, Any] = {"hostname": hostname, "utcoffset": utcoffset(), "pid": os.getpid(),
                             "clock": clock, **fields}  # fmt: skip
    event.setdefault("timestamp", time.time())
    event["type"] = event_type
    return event


def event_message(body: Any, hostname: str) -> Message:
    return Message({"hostname": hostname}, {"delivery_mode": 1}, serialization.json_dumps(body))


def receiver_binding(queue: str, key: str, expires: float | None, ttl: float | None) -> Binding:
    """A monitor's queue; ``event_queue_expires`` and ``event_queue_ttl`` bound its life."""
    return Binding(queue, key, expires, ttl)


def read_events(message: Message) -> list[dict[str, Any]]:
    """The events in ``message``: one object, or a list (``task.multi``)."""
    body = serialization.loads(
        message.body, message.content_type, message.content_encoding,
        accept=frozenset({"application/json"}),
    )  # fmt: skip
    items = body if isinstance(body, list) else [body]
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("type"), str)]
