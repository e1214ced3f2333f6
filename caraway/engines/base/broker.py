"""The broker contract: a few primitives every engine implements.

Prefetch windows, ETA holding, rate limits and acknowledgement policy are written once, above
this contract, in the worker. An engine declares what it can do natively in one record,
``capabilities``, so the layers above know what they must do themselves, and never have to
guess from an engine's class or module.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from caraway.exceptions import ImproperlyConfigured, OperationalError
from caraway.protocol import Message
from caraway.utils.text import mask_url
from caraway.utils.time import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from caraway.engines.base.fanout import Fanout
    from caraway.engines.base.topology import QueueDeclaration


def one_url(url: str | Sequence[str]) -> str:
    """``broker_url`` as one string: Celery also takes a list of failover URLs."""
    return url if isinstance(url, str) else ";".join(url)


class SettlementKept(OperationalError):
    """An ack, release or dead letter could not reach the broker, which is away; the broker
    keeps it and sends it once it is back (the message stays unsettled, never lost)."""


@dataclass(slots=True)
class Outgoing:
    """A message on its way to ``queue``, not to be delivered before ``deliver_at``.

    With ``exchange`` set, the message goes to that exchange with ``routing_key`` instead, and
    reaches the queues bound there (``queue`` then only names the route's queue). The engine
    declares ``declaration`` first when given; without it, a message sent straight to
    ``queue`` declares it in the plain layout (a direct exchange named as the queue), and one
    sent to an exchange declares nothing (a broadcast queue belongs to its worker).
    """

    message: Message
    queue: str
    priority: int = 0
    deliver_at: float | None = None
    exchange: str = ""
    routing_key: str = ""
    exchange_type: str = "direct"
    declaration: QueueDeclaration | None = None


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``tag`` identifies it for ack, release and renewal."""

    message: Message
    queue: str
    tag: Any
    redelivered: bool = False
    #: The exchange and routing key it was published with ("" and the queue name: sent to the
    #: queue directly), for the task's ``delivery_info``.
    exchange: str = ""
    routing_key: str | None = None
    #: Set by the broker when the entry it read is no message at all (say, text some script
    #: pushed onto a Redis list): the consumer sets it aside with this reason.
    problem: str | None = None
    #: The entry as the engine read it, when it keeps it (Redis: kombu's envelope): what
    #: ``portable`` sends another process instead of the decoded message.
    raw: bytes | None = None


@dataclass(slots=True)
class DeadLetter:
    """A message set aside because it cannot be run, with the reason."""

    message: Message
    queue: str
    reason: str
    failed_at: float
    #: The engine's name for this dead letter, for ``settle_dead_letter``.
    key: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What an engine can tell about one queue without taking a message from it.

    A figure the engine cannot give is None, and ``unknown`` says why, keyed by the field's
    name, so a dashboard shows the reason instead of a wrong number.
    """

    #: Messages waiting (``size``).
    messages: int
    #: Messages waiting per priority, in the engine's own numbers (Redis: its lanes' steps).
    by_priority: dict[int, int] | None = None
    #: Consumers the broker itself counts on the queue.
    consumers: int | None = None
    #: Seconds the oldest waiting message has waited since it became ready.
    oldest_age: float | None = None
    #: Task ids of the messages next out (one per priority lane), read without taking them,
    #: so a caller that knows when those tasks were sent can tell their age.
    next_ids: tuple[str, ...] = ()
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BrokerCapabilities:
    """What a broker engine does natively; the worker does the rest itself.

    An engine declares its record as the class attribute ``capabilities``; an instance whose
    options change a figure (a lease length, a hold limit) replaces it with its own copy.
    """

    #: Messages with ``deliver_at`` are held by the broker, not the worker.
    native_delay: bool = False
    #: Delivered messages come back on their own unless renewed (``renew``) ...
    leases: bool = False
    #: ... within this many seconds: the worker renews them three times as often.
    lease_seconds: float = 60.0
    #: ``reclaim_orphans`` gives back messages a dead consumer left delivered.
    reclaims_orphans: bool = False
    #: Which priority number is served first (Redis' convention is ``low-first``);
    #: ``ignored`` where the server does not order by priority (SQS, through kombu).
    priority_order: Literal["high-first", "low-first", "ignored"] = "high-first"
    #: Messages of one queue (and priority) come out in the order they were sent; not so
    #: through kombu's filesystem transport (ordered to the millisecond) or SQS.
    fifo: bool = True
    #: ``fanout`` makes a broadcast engine on the same server (remote control, events).
    broadcast: bool = False
    #: A lost connection takes its deliveries with it (``lost``), and the broker delivers
    #: them again; the consumer then drops its copies.
    loses_deliveries: bool = False
    #: ``revocations`` also returns revocations recorded before this broker was created, so
    #: a worker started later learns of them without asking the others.
    keeps_revocations: bool = True
    #: The broker's URL also names a result backend on the same store (the embedded file):
    #: with no ``result_backend`` set, results are kept there.
    keeps_results: bool = False
    #: Longest a consumer may keep a delivered message unsettled while it waits for its ETA
    #: (None: no limit); past it the consumer calls ``defer``.
    max_hold: float | None = None
    #: Queues may be bound to named direct, topic and fanout exchanges (``declare_bound``),
    #: and messages published to them (``Outgoing.exchange``).
    exchanges: bool = False
    #: ``publish_in`` writes messages through the application's own database connection,
    #: inside its transaction: they exist only if it commits (``apply_async(connection=)``).
    transactional: bool = False
    #: Any connection may settle any delivery (a tag names the message, not the channel
    #: that received it), so prefork children may each fetch, ack and release on their own
    #: connection while the supervisor gives back a dead child's messages. Not so on AMQP,
    #: where a delivery tag belongs to its channel.
    settle_anywhere: bool = False


class Broker(ABC):
    """What a broker engine must provide; what it can do besides is in ``capabilities``."""

    capabilities: BrokerCapabilities = BrokerCapabilities()
    #: The time an engine keeps itself (``deliver_at``, release delays, lease expiry, dead
    #: letter stamps) is read here. A worker built with a clock hands it its own, so tests of
    #: "retry in 30 s" run in virtual time; how long ``fetch`` waits stays real time.
    clock: Clock = SYSTEM_CLOCK

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options = dict(options or {})

    @abstractmethod
    def publish(self, batch: Sequence[Outgoing]) -> None:
        """Store every message of the batch durably before returning."""

    def publish_in(self, connection: Any, batch: Sequence[Outgoing]) -> None:
        """Store the batch through the application's ``connection``, in its open transaction
        (brokers with ``transactional``): consumers see it only if that transaction commits."""
        raise ImproperlyConfigured(
            f"the broker {self.describe()} cannot send a task inside your database transaction:"
            " use a PostgreSQL broker (postgresql://) for apply_async(connection=...)"
        )

    async def publish_async(self, batch: Sequence[Outgoing]) -> None:
        """``publish`` for a running event loop, without blocking it. Engines without an
        asyncio client publish in a worker thread; Redis overrides this."""
        await asyncio.to_thread(self.publish, batch)

    def fetch_receipt(self) -> Any:
        """What names the messages this broker's last fetch took, for another process to
        read with ``receipt_tags`` once this one died (None: the engine keeps no receipt)."""
        return None

    def tags_in_receipt(self, receipt: Any) -> list[Any]:
        """The tags of the last fetch behind ``receipt`` (from ``fetch_receipt``)."""
        return []

    def portable(self, delivery: Delivery) -> Any:
        """``delivery`` in a form cheap to pickle to another process of this worker, which
        rebuilds it with ``from_portable`` (``settle_anywhere`` engines: prefork children
        tell the supervisor what they fetched)."""
        return delivery

    def from_portable(self, data: Any) -> Delivery:
        return data  # type: ignore[no-any-return]

    @abstractmethod
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Up to ``limit`` ready messages from ``queues``, waiting up to ``timeout`` for one.

        A lost connection raises ``Unreachable``: the worker decides when to try again.
        """

    # ``ack``, ``release`` and ``dead_letter`` raise ``SettlementKept`` when the engine keeps
    # the settlement for later, ``OperationalError`` when it is lost (the broker redelivers).

    @abstractmethod
    def ack(self, tags: Sequence[Any]) -> None:
        """Forget delivered messages for good."""

    @abstractmethod
    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        """Give delivered messages back to their queue, visible again after ``delay`` s."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        """Move a delivered message aside; returns where it went, for the log."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete the messages waiting in ``queue``; returns how many."""

    @abstractmethod
    def size(self, queue: str) -> int:
        """How many messages wait in ``queue`` (delivered ones excluded)."""

    def queue_stats(self, queue: str) -> QueueStats:
        """What the engine knows about ``queue`` without consuming from it. The default
        knows the depth only; engines override it with what their server can tell."""
        return QueueStats(self.size(queue), unknown={
            "by_priority": "this broker does not count messages per priority",
            "consumers": "this broker does not count its consumers",
            "oldest_age": "this broker does not tell how long a message has waited",
        })  # fmt: skip

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The messages set aside, oldest first."""

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        """Send the dead letter ``key`` back to its queue (``requeue``) or delete it for good;
        False when no dead letter has that key (settled already)."""
        raise ImproperlyConfigured(
            f"the broker {self.describe()} cannot requeue or delete dead letters"
        )

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        """Record that these tasks must not run, for every consumer now and later."""

    @abstractmethod
    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        """Revocations recorded after ``cursor``: ``([(task_id, terminate)], new_cursor)``."""

    def renew(self, tags: Sequence[Any]) -> None:  # noqa: B027 - optional for lease-less brokers
        """Extend the lease of messages still held (brokers with ``leases``)."""

    def reclaim_orphans(self) -> int:
        """Give back to their queues the messages a consumer that died left delivered
        (brokers with ``reclaims_orphans``); returns how many."""
        return 0

    def fanout(self) -> Fanout:
        """A new broadcast engine on the same server and settings (brokers with
        ``broadcast``), for remote control and events."""
        raise ImproperlyConfigured(
            f"the broker {self.describe()} cannot broadcast: remote control and events need a"
            " broker that can broadcast (Redis, RabbitMQ, SQLite or memory)"
        )

    def lost(self, tags: Collection[Any]) -> set[Any]:
        """The ``tags`` that can no longer be acked or released: the connection that delivered
        them closed, and the broker delivers their messages again (AMQP delivery tags live and
        die with their channel). A consumer must not start such a message. Engines whose tags
        outlive a connection lose none."""
        return set()

    def qos(self, prefetch_count: int) -> None:  # noqa: B027 - optional: prefetch is above
        """The consumer's prefetch window, for engines that push messages (AMQP basic.qos)."""

    def defer(self, delivery: Delivery, until: float) -> bool:
        """Hand ``delivery`` back to come again near ``until``; False if the engine cannot."""
        return False

    def delayed(self, queues: Sequence[str], limit: int = 1000) -> list[tuple[float, Delivery]]:
        """Messages of ``queues`` the engine itself holds until their ETA (``native_delay``),
        soonest first with their ETA: ``inspect scheduled`` lists them beside the worker's own
        holds. Engines that hand ETA messages to the worker at once hold none."""
        return []

    def stop_consuming(self, queue: str) -> None:  # noqa: B027 - pull engines hold nothing
        """The worker no longer fetches from ``queue`` (engines that push messages stop it)."""

    def resume_consuming(self, queue: str) -> None:  # noqa: B027 - pull engines hold nothing
        """Undo ``stop_consuming``: ``queue`` may be fetched from again."""

    def connect(self) -> None:  # noqa: B027 - embedded engines have nothing to reach
        """Reach the server now (connect, authenticate), as a worker does before it says
        ready; ``Unreachable`` when it cannot be reached."""

    def declare(self, queue: str) -> None:  # noqa: B027 - queues are implicit in most engines
        """Make sure ``queue`` exists."""

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        """Make sure the queue exists, bound as ``declaration`` says; a worker consuming it
        declares it so first. Engines without ``exchanges`` route by queue name only, so a
        direct binding changes nothing there, and other kinds are refused."""
        if declaration.exchange_type != "direct":
            raise ImproperlyConfigured(
                f"the broker {self.describe()} cannot bind queue {declaration.queue!r} to the"
                f" {declaration.exchange_type} exchange {declaration.exchange!r}: its engine"
                " routes by queue name only; route by queue name, or use a broker with"
                " exchanges (every built-in one has them)"
            )
        self.declare(declaration.queue)

    def close(self) -> None:  # noqa: B027 - nothing to close in most engines
        """Release connections."""

    def uses_tls(self) -> bool:
        """Whether the connection to the server is encrypted (worker stats report it)."""
        return False

    def describe(self) -> str:
        """The URL with secrets masked, for logs and banners."""
        return mask_url(self.url)
