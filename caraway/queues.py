"""``Exchange``, ``Queue`` and ``Broadcast``: the entries of ``task_queues``.

They take the arguments of kombu's classes of the same names, so a Celery configuration
works after changing ``from kombu import Exchange, Queue`` (and ``from kombu.common import
Broadcast``) to ``from caraway.queues import ...``. kombu's own objects are accepted as they
are when kombu is installed: only their attributes are read (``name``, ``exchange.name``,
``exchange.type``, ``routing_key``, ``queue_arguments``...).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from caraway.engines.base import topology
from caraway.exceptions import ImproperlyConfigured

__all__ = [
    "WORKER_DIRECT_EXCHANGE", "WORKER_DIRECT_SUFFIX", "Broadcast", "Exchange", "Queue",
    "worker_direct",
]  # fmt: skip

#: Celery's exchange of worker-direct queues (``worker_direct``) and their name pattern.
WORKER_DIRECT_EXCHANGE = "C.dq2"
WORKER_DIRECT_SUFFIX = ".dq2"


class Exchange:
    """A named exchange of type ``direct``, ``topic`` or ``fanout``."""

    def __init__(
        self,
        name: str = "",
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        delivery_mode: int | str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        if type not in topology.EXCHANGE_TYPES:
            raise ImproperlyConfigured(
                f"exchange {name!r} has type {type!r}: use one of"
                f" {', '.join(topology.EXCHANGE_TYPES)}"
            )
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.delivery_mode = delivery_mode
        self.arguments = dict(arguments or {})

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r}({self.type})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Exchange) and (self.name, self.type) == (other.name, other.type)

    def __hash__(self) -> int:
        return hash((self.name, self.type))


class Queue:
    """A queue, bound to ``exchange`` with ``routing_key`` (the default exchange when none)."""

    def __init__(
        self,
        name: str = "",
        exchange: Exchange | str | None = None,
        routing_key: str = "",
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        queue_arguments: Mapping[str, Any] | None = None,
        max_priority: int | None = None,
        expires: float | None = None,
        message_ttl: float | None = None,
        max_length: int | None = None,
        alias: str | None = None,
    ) -> None:
        self.name = name
        self.exchange = Exchange(exchange) if isinstance(exchange, str) else exchange
        self.routing_key = routing_key
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete or exclusive
        arguments = dict(queue_arguments or {})
        # RabbitMQ's x- arguments, in kombu's units (seconds become milliseconds).
        for key, value in (
            ("x-max-priority", max_priority),
            ("x-expires", None if expires is None else int(expires * 1000)),
            ("x-message-ttl", None if message_ttl is None else int(message_ttl * 1000)),
            ("x-max-length", max_length),
        ):
            if value is not None:
                arguments.setdefault(key, value)
        self.queue_arguments = arguments or None
        self.alias = alias

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} -> {self.exchange!r} -> {self.routing_key!r}>"


class Broadcast(Queue):
    """A queue of its own for every worker, bound to the fanout exchange ``name``: a task
    sent to ``name`` runs once on every worker consuming it.

    The queue is named ``bcast.<unique id>`` (or ``queue``) and deleted with its consumer;
    ``apply_async(queue=name)`` finds it by its alias, ``name``.
    """

    def __init__(
        self,
        name: str = "",
        queue: str | None = None,
        unique: bool = False,
        auto_delete: bool = True,
        exchange: Exchange | str | None = None,
        alias: str | None = None,
        **options: Any,
    ) -> None:
        if unique or queue is None:
            queue = f"{queue or 'bcast'}.{uuid.uuid4()}"
        super().__init__(
            queue,
            exchange=Exchange(name, type="fanout") if exchange is None else exchange,
            auto_delete=auto_delete,
            alias=alias or name,
            **options,
        )


def worker_direct(hostname: str) -> Queue:
    """The queue only the worker ``hostname`` consumes (``worker_direct``), Celery's names."""
    return Queue(hostname + WORKER_DIRECT_SUFFIX, Exchange(WORKER_DIRECT_EXCHANGE), hostname)
