"""``kombu+<transport>://``: any kombu transport as a broker, through kombu's public API.

Celery's own spellings of kombu's transports (``sqs://``, ``filesystem://``,
``sqla+postgresql://`` ...) come here too, so a Celery configuration works unchanged;
``broker_transport_options`` go to kombu as they are (``region``, ``visibility_timeout``,
``polling_interval`` ...), and ``broker_connection_timeout``, ``broker_heartbeat``,
``broker_use_ssl``, ``broker_login_method`` and ``broker_failover_strategy`` to its
``Connection``. A message travels as kombu sends Celery's: our headers,
properties and body as the kombu message's, so Celery workers and clients on the same
transport read ours and we read theirs.

* Queues are Celery's plain layout: a direct exchange named like the queue, bound with its
  name. Named exchanges other than that are not offered (``exchanges`` is False).
* ``fetch`` takes messages one ``basic_get`` at a time and sleeps between empty rounds, from
  1 ms up to ``polling_interval`` (0.1 s by default): kombu's virtual transports are polled
  by kombu itself too. Publishing has a connection of its own, so a long poll (SQS'
  ``wait_time_seconds``) never holds up a send.
* Priorities are whatever the transport does with kombu's ``priority`` (memory, filesystem
  and SQS ignore it): ``priority_order`` is ``ignored``. Order is the transport's too:
  ``fifo`` is False (the filesystem transport orders by millisecond, SQS hardly at all).
* A delayed ``release`` is held here, unacked, and handed back when due; ETAs are held by
  the worker (``native_delay`` is False). What a transport does with unacked messages when
  a process dies is its own: SQS brings them back after its visibility timeout; kombu's
  memory and filesystem transports keep them only in the consuming process. An entry the
  transport takes but cannot decode is logged and skipped, not raised: kombu's filesystem
  transport can read a message file before its writer has filled it (kombu issue #1551),
  and the worker must go on.
* Dead letters are messages of the queue ``caraway.dead_letters`` with the reason in a
  header of their own; revocations go through the fanout exchange ``caraway.revoked`` where
  the transport has fanout (each broker that reads them binds a queue of its own), and stay
  in this process where it has none.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.message import Message as KombuMessage
from kombu.messaging import Producer

from caraway.engines.base.broker import Broker, BrokerCapabilities, DeadLetter, Delivery, Outgoing
from caraway.engines.base.topology import published_with
from caraway.exceptions import MissingExtra, OperationalError, Unreachable
from caraway.protocol import Message
from caraway.utils.text import mask_url

T = TypeVar("T")
logger = logging.getLogger("caraway.broker")

DEAD_LETTER_QUEUE = "caraway.dead_letters"
REVOKED_EXCHANGE = "caraway.revoked"
#: Our header on a dead letter: ``{"reason", "queue", "failed_at", "key"}``.
DEAD_HEADER = "x-caraway-dead-letter"
#: Properties the transport sets on a received message, not part of what was sent.
TRANSPORT_PROPERTIES = frozenset({"delivery_tag", "body_encoding", "delivery_info", "priority"})
#: The app hands a broker its settings beside the transport options; these go to kombu's
#: Connection by their kombu names, the other ``broker_*`` / ``task_*`` ones stay here (a
#: transport may pass its options on as they are: SQLAlchemy's refuses unknown ones).
CONNECTION_SETTINGS = {
    "broker_connection_timeout": "connect_timeout",
    "broker_heartbeat": "heartbeat",
    "broker_use_ssl": "ssl",
    "broker_login_method": "login_method",
    "broker_failover_strategy": "failover_strategy",
}
SETTING_PREFIXES = ("broker_", "task_")
#: kombu's extra for a transport, where its name is not the scheme's.
KOMBU_EXTRAS = {"sqla": "sqlalchemy"}
#: Most dead letters read in one listing or settlement (each is taken and handed back).
DEAD_LETTER_SCAN = 10_000


def kombu_url(url: str) -> str:
    """``kombu+sqs://key:secret@`` -> ``sqs://key:secret@``; Celery's spellings as they are."""
    scheme, sep, rest = url.partition("://")
    family, plus, transport = scheme.partition("+")
    if plus and family.lower() == "kombu":
        return f"{transport}{sep}{rest}"
    return url


class KombuBroker(Broker):
    capabilities = BrokerCapabilities(priority_order="ignored", fifo=False, keeps_revocations=False)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.kombu_url = kombu_url(url)
        self.poll_cap = float(self.options.get("polling_interval") or 0.1)
        transport = {k: v for k, v in self.options.items() if not k.startswith(SETTING_PREFIXES)}
        connection = {
            arg: self.options[name]
            for name, arg in CONNECTION_SETTINGS.items()
            if self.options.get(name) not in (None, False)
        }
        self._consumer = _Lane(self.kombu_url, transport, connection, self.describe())
        self._producer = _Lane(self.kombu_url, transport, connection, self.describe())
        self._held: dict[str, KombuMessage] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._revoked: list[tuple[str, bool]] = []
        self._revoked_queue: Queue | None = None

    # --- sending ---------------------------------------------------------------------

    def publish(self, batch: Sequence[Outgoing]) -> None:
        self._producer.run(lambda channel: self._publish(channel, batch), "to publish")

    def _publish(self, channel: Any, batch: Sequence[Outgoing]) -> None:
        producer = Producer(channel)
        for item in batch:
            queue = self._producer.declared(channel, item.queue)
            _send(producer, item.message, queue.name, item.priority)

    def declare(self, queue: str) -> None:
        self._producer.run(lambda channel: self._producer.declared(channel, queue), "to declare")

    # --- receiving -------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            found = self._consumer.run(
                lambda channel: self._take(channel, queues, limit), "to fetch"
            )
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self.poll_cap)

    def _take(self, channel: Any, queues: Sequence[str], limit: int) -> list[Delivery]:
        found: list[Delivery] = []
        for queue in queues:
            self._consumer.declared(channel, queue)
            while len(found) < limit:
                try:
                    got = channel.basic_get(queue, no_ack=False)
                except ValueError as exc:  # an undecodable entry the transport already took
                    logger.error("kombu broker %s: a message of %s could not be read and is"
                                 " lost: %s", self.describe(), queue, exc)  # fmt: skip
                    break  # the next round reads on, should the entry still be there
                if got is None:
                    break
                tag = uuid.uuid4().hex
                self._held[tag] = got
                found.append(published_with(Delivery(
                    _message(got), queue, tag,
                    redelivered=bool(got.delivery_info.get("redelivered")),
                )))  # fmt: skip
        return found

    def ack(self, tags: Sequence[Any]) -> None:
        self._consumer.run(lambda channel: self._settle(tags, lambda m: m.ack()), "to ack")

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        if delay <= 0:
            self._requeue(tags)
            return
        for tag in tags:  # held unacked here until due, then handed back
            timer = threading.Timer(delay, self._requeue, ([tag],))
            timer.daemon = True
            self._timers[tag] = timer
            timer.start()

    def _requeue(self, tags: Sequence[Any]) -> None:
        for tag in tags:
            self._timers.pop(tag, None)
        self._consumer.run(
            lambda channel: self._settle(tags, lambda m: m.reject(requeue=True)), "to release"
        )

    def _settle(self, tags: Sequence[Any], how: Callable[[KombuMessage], None]) -> None:
        for tag in tags:
            message = self._held.pop(tag, None)
            if message is not None:
                how(message)

    # --- dead letters ----------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        note = {"reason": reason, "queue": delivery.queue, "failed_at": self.clock.time(),
                "key": uuid.uuid4().hex}  # fmt: skip
        sent = delivery.message
        letter = Message({**sent.headers, DEAD_HEADER: json.dumps(note)}, sent.properties,
                         sent.body, sent.content_type, sent.content_encoding)  # fmt: skip
        self.publish([Outgoing(letter, DEAD_LETTER_QUEUE)])
        self.ack([delivery.tag])
        return f"the queue {DEAD_LETTER_QUEUE} of {self.describe()}"

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self._scan(limit, lambda letter: False)[0]

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        _, chosen = self._scan(DEAD_LETTER_SCAN, lambda letter: letter.key == key)
        if chosen is None:
            return False
        letter, message = chosen
        if requeue:
            self.publish([Outgoing(letter.message, letter.queue, letter.message.priority)])
        self._consumer.run(lambda channel: message.ack(), "to settle a dead letter")
        return True

    def _scan(
        self, limit: int, wanted: Callable[[DeadLetter], bool]
    ) -> tuple[list[DeadLetter], tuple[DeadLetter, KombuMessage] | None]:
        """Take up to ``limit`` dead letters and hand them back, all but the first one
        ``wanted``, which is returned still held (unacked)."""

        def scan(channel: Any) -> tuple[list[DeadLetter], tuple[DeadLetter, KombuMessage] | None]:
            self._consumer.declared(channel, DEAD_LETTER_QUEUE)
            seen: list[DeadLetter] = []
            chosen: tuple[DeadLetter, KombuMessage] | None = None
            taken: list[KombuMessage] = []
            while len(seen) < limit:
                got = channel.basic_get(DEAD_LETTER_QUEUE, no_ack=False)
                if got is None:
                    break
                letter = _dead_letter(got)
                seen.append(letter)
                if chosen is None and wanted(letter):
                    chosen = (letter, got)
                else:
                    taken.append(got)
            for message in taken:
                message.reject(requeue=True)
            return seen, chosen

        return self._consumer.run(scan, "to read dead letters")

    # --- queues ----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        """The count is read before the purge: kombu 5.7's SQS transport returns its queue's
        size added up over ten reads."""

        def purge(channel: Any) -> int:
            waiting = self._size(channel, queue)
            self._consumer.declared(channel, queue).purge()
            return waiting

        return self._consumer.run(purge, "to purge")

    def size(self, queue: str) -> int:
        return self._consumer.run(lambda channel: self._size(channel, queue), "to count messages")

    def _size(self, channel: Any, queue: str) -> int:
        declared = self._consumer.declared(channel, queue)
        return int(declared.queue_declare(passive=True).message_count or 0)

    # --- revocations -----------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        entries = [(task_id, terminate) for task_id in task_ids]
        if not self._producer.run(lambda channel: self._producer.fans_out(), "to revoke"):
            self._revoked.extend(entries)
            return
        # Stamped: a transport may hand back two sends of one millisecond in either order.
        body = json.dumps({"at": time.time(), "entries": entries}).encode()

        def send(channel: Any) -> None:
            exchange = Exchange(REVOKED_EXCHANGE, "fanout", durable=False)
            exchange(channel).declare()
            Producer(channel).publish(body, exchange=exchange, routing_key="",
                                            content_type="application/json",
                                            content_encoding="utf-8")  # fmt: skip

        self._producer.run(send, "to revoke")

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        self._consumer.run(self._read_revocations, "to read revocations")
        return list(self._revoked[cursor:]), len(self._revoked)

    def _read_revocations(self, channel: Any) -> None:
        if not self._consumer.fans_out():
            return
        if self._revoked_queue is None:
            exchange = Exchange(REVOKED_EXCHANGE, "fanout", durable=False)
            queue = Queue(f"{REVOKED_EXCHANGE}.{uuid.uuid4().hex}", exchange,
                          durable=False, auto_delete=True)  # fmt: skip
            queue(channel).declare()
            self._revoked_queue = queue
        arrived = []
        while (got := channel.basic_get(self._revoked_queue.name, no_ack=True)) is not None:
            arrived.append(json.loads(got.body))
        for sent in sorted(arrived, key=lambda sent: float(sent["at"])):
            self._revoked.extend((str(task_id), bool(kill)) for task_id, kill in sent["entries"])

    # --- connections -----------------------------------------------------------------

    def connect(self) -> None:
        self._consumer.run(lambda channel: None, "to connect")
        self._producer.run(lambda channel: None, "to connect")

    def close(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
        self._timers.clear()
        if self._revoked_queue is not None:
            queue, self._revoked_queue = self._revoked_queue, None
            with suppress(OperationalError):  # the server is away: nothing to delete it on
                self._consumer.run(lambda channel: queue(channel).delete(), "to close")
        self._held.clear()
        self._consumer.close()
        self._producer.close()

    def describe(self) -> str:
        return mask_url(self.url)


class _Lane:
    """One kombu connection and channel, used by one thread at a time (kombu's channels are
    not thread-safe); made on first use and made again after a connection error."""

    def __init__(
        self, url: str, options: Mapping[str, Any], arguments: Mapping[str, Any], described: str
    ) -> None:
        self.url = url
        self.options = dict(options)
        self.arguments = dict(arguments)
        self.described = described
        self.lock = threading.RLock()
        self.connection: Connection | None = None
        self.channel: Any = None
        self.queues: dict[str, Queue] = {}

    def run(self, step: Callable[[Any], T], doing: str) -> T:
        with self.lock, self._translated(doing):
            if self.channel is None:
                self._open()
            return step(self.channel)

    def _open(self) -> None:
        """A kombu connection and channel; a transport whose client library is missing (kombu
        imports it when the transport or its first channel is made) says which."""
        try:
            self.connection = Connection(self.url, transport_options=self.options, **self.arguments)
            self.channel = self.connection.channel()
            self.queues = {}
        except ImportError as exc:
            transport = self.url.partition("://")[0].partition("+")[0]
            extra = KOMBU_EXTRAS.get(transport, transport)
            raise MissingExtra(
                f"kombu's {transport} transport needs its client library ({exc}):"
                f' pip install "kombu[{extra}]"'
            ) from exc

    def fans_out(self) -> bool:
        """Whether the transport has fanout exchanges, as its ``implements`` record says."""
        assert self.connection is not None  # called inside ``run``
        return "fanout" in self.connection.transport.implements.exchange_type

    def declared(self, channel: Any, name: str) -> Queue:
        """The queue ``name`` in Celery's plain layout, declared once per channel."""
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, Exchange(name, "direct"), routing_key=name)
            queue = queue(channel)
            queue.declare()
            self.queues[name] = queue
        return queue

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """kombu's and the transport's errors as ours; a connection error drops the channel
        (its unsettled deliveries with it) so the next call connects again."""
        try:
            yield
        except self._channel_errors() as exc:
            raise OperationalError(f"kombu broker {self.described} failed {doing}: {exc}") from exc
        except self._connection_errors() as exc:
            self.close()
            raise Unreachable(f"kombu broker {self.described} failed {doing}: {exc!r}") from exc

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        errors = tuple(self.connection.connection_errors) if self.connection is not None else ()
        return (OSError, KombuOperationalError, *errors)

    def _channel_errors(self) -> tuple[type[BaseException], ...]:
        errors = tuple(self.connection.channel_errors) if self.connection is not None else ()
        return (ChannelError, *errors)

    def close(self) -> None:
        with self.lock:
            connection, self.connection, self.channel = self.connection, None, None
            if connection is not None:
                with suppress(Exception):  # closing what may already be broken
                    connection.release()


def _send(producer: Any, message: Message, queue: str, priority: int) -> None:
    """``message`` as kombu publishes Celery's: headers, properties and body unchanged."""
    properties = {k: v for k, v in message.properties.items() if k not in TRANSPORT_PROPERTIES}
    properties.setdefault("delivery_mode", 2)
    producer.publish(
        message.body, routing_key=queue, exchange=queue, headers=dict(message.headers),
        content_type=message.content_type, content_encoding=message.content_encoding,
        priority=priority or message.priority, **properties,
    )  # fmt: skip


def _message(got: KombuMessage) -> Message:
    properties = {k: v for k, v in got.properties.items() if k not in TRANSPORT_PROPERTIES}
    properties["delivery_info"] = {
        "exchange": got.delivery_info.get("exchange", ""),
        "routing_key": got.delivery_info.get("routing_key"),
    }
    priority = got.properties.get("priority")
    if priority:
        properties["priority"] = priority
    content_type = got.content_type or "application/json"
    return Message(dict(got.headers or {}), properties, bytes(got.body), content_type,
                   got.content_encoding or "utf-8")  # fmt: skip


def _dead_letter(got: KombuMessage) -> DeadLetter:
    message = _message(got)
    note = json.loads(message.headers.pop(DEAD_HEADER, "{}"))
    return DeadLetter(message, str(note.get("queue") or ""), str(note.get("reason") or ""),
                      float(note.get("failed_at") or 0.0), str(note.get("key") or ""))  # fmt: skip
