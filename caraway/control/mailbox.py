"""The pidbox wire format (docs/celery-wire.md §7.1, §7.2): control requests and their replies.

A request goes to the fanout exchange ``celery.pidbox`` with headers ``clock`` and
``expires``; the body names the method, its arguments and which nodes should act.
Requests that want answers carry a ``ticket`` and a ``reply_to`` (the direct exchange
``reply.celery.pidbox`` and a routing key); every node answers ``{hostname: result}``
there, with the ticket in the headers.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caraway import serialization
from caraway.engines.base.fanout import Binding, Exchange
from caraway.protocol import Message
from caraway.utils.clock import LamportClock

if TYPE_CHECKING:
    from caraway.app import Caraway

PIDBOX = Exchange("celery.pidbox", "fanout", durable=False)
REPLY = Exchange("reply.celery.pidbox", "direct", durable=False)
#: Control traffic is JSON, whatever the task serializer: never unpickle a broadcast.
JSON_ONLY = frozenset({"application/json"})


def clock_of(app: Caraway) -> LamportClock:
    """The app's Lamport clock (``app.clock``), shared by control and events."""
    return app.clock


def node_binding(app: Caraway, hostname: str) -> Binding:
    """A worker's control queue: ``<hostname>.celery.pidbox``."""
    conf = app.conf
    name = f"{hostname}.{PIDBOX.name}"
    return Binding(name, "", conf.control_queue_expires, conf.control_queue_ttl)


def reply_binding(app: Caraway, reply_id: str) -> Binding:
    """A client's reply queue: ``<reply id>.reply.celery.pidbox`` bound with the reply id."""
    conf = app.conf
    name = f"{reply_id}.{REPLY.name}"
    return Binding(name, reply_id, conf.control_queue_expires, conf.control_queue_ttl)


@dataclass(slots=True)
class Request:
    """A decoded control request."""

    method: str
    arguments: dict[str, Any]
    destination: list[str] | None = None
    pattern: str | None = None
    matcher: str | None = None
    ticket: str | None = None
    reply_to: dict[str, Any] | None = None
    clock: int = 0
    expires: float = 0.0

    def is_for(self, hostname: str) -> bool:
        """Whether the node ``hostname`` should act on this request."""
        if self.destination is not None and hostname not in self.destination:
            return False
        if self.pattern:
            if self.matcher == "pcre":
                return re.search(self.pattern, hostname) is not None
            return fnmatch.fnmatchcase(hostname, self.pattern)
        return True


def request_message(request: Request) -> Message:
    body: dict[str, Any] = {
        "method": request.method,
        "arguments": request.arguments,
        "destination": request.destination,
        "pattern": request.pattern,
        "matcher": request.matcher,
    }
    if request.ticket is not None:
        body["ticket"] = request.ticket
        body["reply_to"] = request.reply_to
    return Message(
        {"clock": request.clock, "expires": request.expires},
        {"delivery_mode": 2},
        serialization.json_dumps(body),
    )


def read_request(message: Message) -> Request:
    """The request in ``message``; ``ValueError`` when it is not one."""
    body = serialization.loads(
        message.body, message.content_type, message.content_encoding, accept=JSON_ONLY
    )
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        raise ValueError(f"not a control request: {body!r:.200}")
    destination = body.get("destination")
    if isinstance(destination, str):
        destination = [destination]
    return Request(
        method=body["method"],
        arguments=dict(body.get("arguments") or {}),
        destination=list(destination) if destination is not None else None,
        pattern=body.get("pattern"),
        matcher=body.get("matcher"),
        ticket=body.get("ticket"),
        reply_to=body.get("reply_to"),
        clock=int(message.headers.get("clock") or 0),
        expires=float(message.headers.get("expires") or 0.0),
    )


def reply_message(hostname: str, result: Any, ticket: str, clock: int) -> Message:
    return Message(
        {"ticket": ticket, "clock": clock},
        {"delivery_mode": 1},
        serialization.json_dumps({hostname: result}),
    )


def read_reply(message: Message) -> tuple[str | None, dict[str, Any]]:
    """``(ticket, {hostname: result})`` of a reply message."""
    body = serialization.loads(
        message.body, message.content_type, message.content_encoding, accept=JSON_ONLY
    )
    ticket = message.headers.get("ticket")
    return (ticket if isinstance(ticket, str) else None), (body if isinstance(body, dict) else {})
