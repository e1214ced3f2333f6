"""Task queues bound to exchanges, as the broker contract receives them.

By default a queue ``q`` is bound to a direct exchange ``q`` with the key ``q``, and tasks go
through the default exchange ``""`` keyed by the queue name. ``task_queues`` may bind a queue
to any exchange instead: a ``direct`` one delivers a message to the queues bound with its exact
routing key, a ``topic`` one to those whose binding pattern matches (``*`` one word, ``#`` any
number), a ``fanout`` one to every bound queue. The layers above turn Celery's ``Queue`` and
``Exchange`` objects into these records; an engine only declares and routes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from caraway.engines.base.fanout import Exchange, matches

if TYPE_CHECKING:
    from caraway.engines.base.broker import Delivery, Outgoing

logger = logging.getLogger("caraway.broker")

#: The exchange kinds a task queue may be bound to (RabbitMQ's ``headers`` is not offered).
EXCHANGE_TYPES = ("direct", "topic", "fanout")


@dataclass(frozen=True, slots=True)
class QueueDeclaration:
    """A queue, how it is declared, and the exchange and key it is bound with."""

    queue: str
    exchange: str
    exchange_type: str = "direct"
    routing_key: str = ""
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    exchange_durable: bool = True
    exchange_auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def plain(cls, queue: str) -> QueueDeclaration:
        """caraway's and Celery's layout for a queue named only by its name."""
        return cls(queue, queue, "direct", queue)

    @property
    def is_plain(self) -> bool:
        return (
            self.exchange == self.queue
            and self.exchange_type == "direct"
            and self.routing_key == self.queue
            and not (self.exclusive or self.auto_delete)
        )

    @property
    def broadcast(self) -> bool:
        """Bound to a fanout exchange: every such queue gets its own copy of each message."""
        return self.exchange_type == "fanout"


def routes_to(declaration: QueueDeclaration, exchange: str, routing_key: str) -> bool:
    """Whether a message published to ``exchange`` with ``routing_key`` reaches the queue
    (the binding's declared type decides, as an exchange has one type)."""
    if declaration.exchange != exchange:
        return False
    kind = Exchange(exchange, declaration.exchange_type)
    return matches(kind, declaration.routing_key, routing_key)


def fan_out(
    batch: Sequence[Outgoing], bindings: Callable[[str], Iterable[QueueDeclaration]]
) -> list[Outgoing]:
    """For engines that keep their own binding table: each message sent to an exchange
    becomes one copy per bound queue its key reaches (``bindings(exchange)``); the copies
    keep the exchange and key, for ``delivery_info``. A message no queue is bound for is
    dropped, as RabbitMQ drops it, with a warning."""
    routed: list[Outgoing] = []
    for item in batch:
        if not item.exchange:
            routed.append(item)
            continue
        bound = bindings(item.exchange)
        queues = [b.queue for b in bound if routes_to(b, item.exchange, item.routing_key)]
        if not queues:
            logger.warning(
                "No queue is bound to the exchange %r with a key matching %r: the message of"
                " task %s is dropped, as on RabbitMQ", item.exchange, item.routing_key,
                item.message.headers.get("id"),
            )  # fmt: skip
        routed.extend(replace(item, queue=queue) for queue in dict.fromkeys(queues))
    return routed


def published_with(delivery: Delivery) -> Delivery:
    """``delivery`` with the exchange and key its message records (``delivery_info``)."""
    info = delivery.message.properties.get("delivery_info") or {}
    delivery.exchange = str(info.get("exchange") or "")
    delivery.routing_key = info.get("routing_key")
    return delivery
