"""Celery task protocols 2 (the default) and 1: building task messages and reading them back.

A ``Message`` is the transport-neutral form (headers, properties, body bytes); each broker
maps it onto its own storage. See ``docs/celery-wire.md`` §1 for every field.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caraway import serialization
from caraway.exceptions import DecodeError, InvalidTaskError
from caraway.utils.text import truncate
from caraway.utils.time import parse_iso, to_iso

EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


@dataclass(slots=True)
class Message:
    """One message as it travels: AMQP-style properties and headers, and the encoded body."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    content_type: str = "application/json"
    content_encoding: str = "utf-8"

    @property
    def task_name(self) -> str | None:
        name = self.headers.get("task")
        return name if isinstance(name, str) else None

    @property
    def task_id(self) -> str | None:
        task_id = self.headers.get("id") or self.properties.get("correlation_id")
        return task_id if isinstance(task_id, str) else None

    @property
    def priority(self) -> int:
        return int(self.properties.get("priority") or 0)


@dataclass(slots=True)
class TaskCall:
    """What a worker needs from a task message, decoded."""

    name: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_EMBED))
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    timelimit: tuple[float | None, float | None] = (None, None)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


def repr_args(value: Any) -> str:
    text = repr(value)
    if "b'" in text or 'b"' in text:  # may hold bytes: walk it only then, repr is faster
        text = _safe_repr(value)
    return truncate(text, 1024)


def _safe_repr(value: Any, depth: int = 0) -> str:
    """``repr``, except bytes that are not UTF-8 show as hex (``b'ff0001'``), as Celery logs."""
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return f"b'{value.hex()}'"
        return repr(value)
    if depth < 8:  # deeper (or self-referencing) structures fall back to plain repr
        kind = type(value)
        if kind is dict:
            items = (
                f"{_safe_repr(k, depth + 1)}: {_safe_repr(v, depth + 1)}" for k, v in value.items()
            )
            return "{" + ", ".join(items) + "}"
        if kind is list:
            return "[" + ", ".join(_safe_repr(item, depth + 1) for item in value) + "]"
        if kind is tuple:
            inner = [_safe_repr(item, depth + 1) for item in value]
            return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
    return repr(value)


def build_task_message(
    name: str,
    task_id: str,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    *,
    eta: datetime | None = None,
    expires: datetime | None = None,
    group: str | None = None,
    group_index: int | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    shadow: str | None = None,
    ignore_result: bool | None = False,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chain: list[Any] | None = None,
    chord: Any = None,
    reply_to: str = "",
    priority: int | None = None,
    serializer: str = "json",
    compression: str | None = None,
    headers: dict[str, Any] | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    stamped_headers: list[str] | None = None,
    stamps: dict[str, Any] | None = None,
    replaced_task_nesting: int = 0,
    now: datetime | None = None,
) -> Message:
    """Build a protocol-2 task message with every header Celery 5.7 writes, in its order."""
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list | tuple):
        raise TypeError(f"task args must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"task kwargs must be a dict, got {type(kwargs).__name__}")
    message_headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": to_iso(eta) if eta else None,
        "expires": to_iso(expires) if expires else None,
        "group": group,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr if argsrepr is not None else repr_args(args),
        "kwargsrepr": kwargsrepr if kwargsrepr is not None else repr_args(kwargs),
        "origin": ORIGIN,
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": stamped_headers,
        "stamps": stamps or {},
    }
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    # A tuple with args as given: pickle then writes ((1, 2), {}, {...}) as Celery does;
    # text serializers write arrays either way.
    content_type, content_encoding, body = serialization.dumps((args, kwargs, embed), serializer)
    if compression:
        body, message_headers["compression"] = serialization.compress(body, compression)
    if headers:
        message_headers.update(headers)
    properties = _properties(task_id, reply_to, priority, expires, now)
    return Message(message_headers, properties, body, content_type, content_encoding)


def build_task_message_v1(
    name: str,
    task_id: str,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    *,
    eta: datetime | None = None,
    expires: datetime | None = None,
    group: str | None = None,
    group_index: int | None = None,
    retries: int = 0,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    callbacks: list[Any] | None = None,
    errbacks: list[Any] | None = None,
    chord: Any = None,
    reply_to: str = "",
    priority: int | None = None,
    serializer: str = "json",
    compression: str | None = None,
    headers: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[Message, dict[str, Any]]:
    """Build a protocol-1 message (``task_protocol = 1``, docs/celery-wire.md §1.7): no
    headers, everything in one body object; returns the message and that body.

    Protocol 1 has no chain, root/parent ids, shadow or stamps: the caller sends a chain as
    links (``caraway.calling.legacy``)."""
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list | tuple):
        raise TypeError(f"task args must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"task kwargs must be a dict, got {type(kwargs).__name__}")
    body: dict[str, Any] = {
        "task": name,
        "id": task_id,
        "args": args,
        "kwargs": kwargs,
        "group": group,
        "group_index": group_index,
        "retries": retries,
        "eta": to_iso(eta) if eta else None,
        "expires": to_iso(expires) if expires else None,
        "utc": True,
        "callbacks": callbacks,
        "errbacks": errbacks,
        "timelimit": [time_limit, soft_time_limit],
        "taskset": group,
        "chord": chord,
    }
    message_headers: dict[str, Any] = dict(headers or {})
    content_type, content_encoding, data = serialization.dumps(body, serializer)
    if compression:
        data, message_headers["compression"] = serialization.compress(data, compression)
    message = Message(message_headers, {}, data, content_type, content_encoding)
    message.properties.update(_properties(task_id, reply_to, priority, expires, now))
    return message, body


def _properties(
    task_id: str,
    reply_to: str,
    priority: int | None,
    expires: datetime | None,
    now: datetime | None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": 2,
        "priority": 0 if priority is None else priority,
    }
    if expires is not None:
        reference = now or datetime.now(expires.tzinfo)
        # Rounded, not truncated: expires=120 must read "120000" despite float noise.
        ttl_ms = max(0, round((expires - reference).total_seconds() * 1000))
        properties["expiration"] = str(ttl_ms)
    return properties


#: Headers the protocol itself writes; any other header was given by the caller.
PROTOCOL_HEADERS = frozenset(
    {
        "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
        "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
        "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "compression",
    }
)  # fmt: skip


def custom_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """The caller's own headers of a message (``apply_async(headers=...)``), kept on retry."""
    return {k: v for k, v in (headers or {}).items() if k not in PROTOCOL_HEADERS}


def decode_body(
    message: Message, accept: frozenset[str] | None, max_size: int | None = None
) -> Any:
    """Decompress (to at most ``max_size`` bytes) and deserialize the body; errors name the
    content type."""
    body = message.body
    compression = message.headers.get("compression")
    if compression:
        body = serialization.decompress(body, compression, max_size)
    return serialization.loads(body, message.content_type, message.content_encoding, accept)


def parse_task_message(
    message: Message, accept: frozenset[str] | None, max_size: int | None = None
) -> TaskCall:
    """Read a v2 message (or a v1 one, whose headers carry no ``task``) into a ``TaskCall``;
    ``max_size`` bounds a compressed body once expanded."""
    headers = message.headers
    body = decode_body(message, accept, max_size)
    if "task" not in headers:
        return _parse_v1(body, message)
    if not isinstance(body, list | tuple) or len(body) != 3:
        raise InvalidTaskError(
            "task message body must be a 3-element array [args, kwargs, embed], got "
            f"{truncate(repr(body), 200)}"
        )
    args, kwargs, embed = body
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise InvalidTaskError("task message body must hold a list of args and a dict of kwargs")
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskError("task message has no 'id' header")
    return TaskCall(
        name=str(headers["task"]),
        id=task_id,
        args=list(args),
        kwargs=kwargs,
        embed={**EMPTY_EMBED, **(embed or {})},
        eta=_time_header(headers, "eta"),
        expires=_time_header(headers, "expires"),
        retries=int(headers.get("retries") or 0),
        timelimit=_timelimit(headers.get("timelimit")),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        shadow=headers.get("shadow"),
        origin=headers.get("origin"),
        ignore_result=bool(headers.get("ignore_result")),
        reply_to=message.properties.get("reply_to"),
        correlation_id=message.properties.get("correlation_id"),
        headers=headers,
        properties=message.properties,
    )


def _parse_v1(body: Any, message: Message) -> TaskCall:
    if not isinstance(body, dict) or "task" not in body or "id" not in body:
        raise InvalidTaskError("message has no 'task' header and is not a protocol-1 body")
    embed = {key: body.get(key) for key in EMPTY_EMBED}
    return TaskCall(
        name=str(body["task"]),
        id=str(body["id"]),
        args=list(body.get("args") or []),
        kwargs=dict(body.get("kwargs") or {}),
        embed=embed,
        eta=_time_header(body, "eta"),
        expires=_time_header(body, "expires"),
        retries=int(body.get("retries") or 0),
        timelimit=_timelimit(body.get("timelimit")),
        root_id=body.get("root_id"),
        parent_id=body.get("parent_id"),
        group=body.get("taskset") or body.get("group"),
        group_index=body.get("group_index"),
        reply_to=message.properties.get("reply_to"),
        correlation_id=message.properties.get("correlation_id"),
        headers=message.headers,
        properties=message.properties,
    )


def _time_header(headers: dict[str, Any], key: str) -> datetime | None:
    value = headers.get(key)
    try:
        return parse_iso(value)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"header {key!r} is not an ISO-8601 time: {value!r}") from exc


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    if not value:
        return (None, None)
    hard, soft = [*list(value), None, None][:2]
    return (hard, soft)
