"""``task-sent``: the event a producer sends per task with ``task_send_sent_event``."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from caraway.events.dispatcher import EventDispatcher
from caraway.protocol import Message, _safe_repr

if TYPE_CHECKING:
    from caraway.app import Caraway

_dispatchers: weakref.WeakKeyDictionary[Any, EventDispatcher] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def send_sent_event(app: Caraway, message: Message, body: Any, queue: str) -> None:
    """Send ``task-sent`` for a published task message (sent at once, as Celery does)."""
    with _lock:
        dispatcher = _dispatchers.get(app)
        if dispatcher is None:
            dispatcher = _dispatchers[app] = EventDispatcher(app)
    headers = message.headers
    if isinstance(body, dict):  # protocol 1: every field is in the body
        headers, args, kwargs = body, body.get("args") or (), body.get("kwargs") or {}
    else:
        args, kwargs = (
            (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else ((), {})
        )
    dispatcher.send(
        "task-sent", uuid=headers.get("id"), root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"), group_id=headers.get("group"),
        name=headers.get("task"),
        args=_safe_repr(tuple(args)), kwargs=_safe_repr(kwargs), retries=headers.get("retries", 0),
        eta=headers.get("eta"), expires=headers.get("expires"), queue=queue, exchange="",
        routing_key=queue,
    )  # fmt: skip
