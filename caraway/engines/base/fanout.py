"""The broadcast contract: exchanges that copy a message to every bound subscriber.

Remote control and events travel this way (docs/celery-wire.md §3.6, §4.5, §7). Task queues do not:
they are the broker contract's business. An engine fills in two primitives, ``publish`` and
``subscribe``; the mailbox, the event dispatcher and the receiver are written once above.

Delivery is at most once and only to subscribers that exist when the message is sent, as on
Redis pub/sub and RabbitMQ's auto-delete queues: a control request or an event is worth
nothing to a worker that starts later.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

from caraway.protocol import Message

#: Exchange kinds: ``fanout`` copies to every queue, ``topic`` matches routing keys against
#: binding patterns (``*`` one word, ``#`` any number), ``direct`` needs the exact key.
KINDS = ("fanout", "topic", "direct")


@dataclass(frozen=True, slots=True)
class Exchange:
    """An exchange as Celery declares it; ``durable`` must match on RabbitMQ."""

    name: str
    kind: str
    durable: bool = False


@dataclass(frozen=True, slots=True)
class Binding:
    """A subscriber's queue and how it is bound.

    ``expires`` and ``message_ttl`` (seconds) are RabbitMQ's ``x-expires`` and
    ``x-message-ttl``; other engines let the queue vanish with its subscriber.
    """

    queue: str
    routing_key: str = ""
    expires: float | None = None
    message_ttl: float | None = None
    exclusive: bool = True


class Subscription(ABC):
    """Messages arriving on one bound queue, read by one thread."""

    @abstractmethod
    def get(self, timeout: float) -> list[Message]:
        """The messages that arrived, waiting up to ``timeout`` s for the first one."""

    @abstractmethod
    def close(self) -> None:
        """Unbind and free the queue; safe to call twice."""

    def pending(self) -> bool:
        """Whether messages have reached this subscriber that its reader has not finished
        with (returned by ``get``, done once it calls ``get`` again). Asked from another
        thread; engines that cannot tell answer False."""
        return False


class Fanout(ABC):
    """One engine's broadcast primitives; safe to share between threads."""

    @abstractmethod
    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        """Send ``message`` to every queue bound to ``exchange`` that matches ``routing_key``."""

    def publish_routed(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        """``publish``, returning only once the server has put the message in the bound
        queues: whatever the caller sends next, on any connection, arrives after it (a task
        sent right after ``revoke_by_stamped_headers`` must find the worker told). Engines
        whose ``publish`` already returns that late keep this default."""
        self.publish(exchange, routing_key, message)

    def publish_counted(self, exchange: Exchange, routing_key: str, message: Message) -> int | None:
        """``publish_routed``, and how many subscribers the server handed the message to,
        where the engine learns it as it publishes (``None``: unknown). A caller waiting for
        one answer per receiver stops at that count instead of waiting out its timeout."""
        self.publish_routed(exchange, routing_key, message)
        return None

    @abstractmethod
    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        """Bind a queue to ``exchange``; messages published after this returns arrive."""

    def close(self) -> None:  # noqa: B027 - most engines hold nothing
        """Release connections."""


def matches(exchange: Exchange, binding_key: str, routing_key: str) -> bool:
    """Whether a message sent with ``routing_key`` reaches a queue bound with ``binding_key``."""
    if exchange.kind == "fanout":
        return True
    if exchange.kind == "direct":
        return binding_key == routing_key
    return _topic_pattern(binding_key).fullmatch("." + routing_key) is not None


@lru_cache(maxsize=256)
def _topic_pattern(binding_key: str) -> re.Pattern[str]:
    """AMQP topic matching: words split on dots, ``*`` one word, ``#`` zero or more.

    Each word is matched with the dot before it (the key is read as ``.`` + key), so ``#``
    can stand for no word at all wherever it is: ``a.#`` matches ``a``, ``#.b`` matches ``b``.
    """
    parts: list[str] = []
    for word in binding_key.split("."):
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    return re.compile("".join(parts))
