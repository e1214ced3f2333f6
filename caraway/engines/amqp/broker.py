"""``amqp://`` (also ``amqps://``, ``pyamqp://``): RabbitMQ through py-amqp, Celery's layout.

Topology (docs/celery-wire.md §4.1): for every queue a worker consumes or a task is routed to, a
durable direct exchange and a durable queue of the same name, bound with the queue name as key,
unless ``task_queues`` binds the queue otherwise (``declare_bound``: its exchange is declared
with its type, the queue with its flags, and bound with its key; docs/routing.md). Tasks go to
the default exchange ``""`` with the queue name as routing key, persistent, or to the exchange
and key their route names.
Queue arguments are added only when configured: ``x-max-priority`` from
``task_queue_max_priority`` (the default queue and the queues of ``task_queues``, as Celery
does; the transport option ``queue_max_priority`` puts it on every queue), ``x-queue-type:
quorum`` from the queue-type settings, and anything given in ``task_queues`` entries or the
transport option ``queue_arguments`` (``{queue: {...}}``).

Two connections per broker: one consumes (``fetch``), one publishes with publisher
confirms (a batch returns once RabbitMQ confirmed all of it). py-amqp is not thread-safe, so
each connection has a lock; acks from pool threads are queued and sent by whichever thread
holds the consuming connection next (at once when it is free, else within ``DRAIN_SLICE``).

Also kept here, in RabbitMQ's own terms: dead letters in the durable queue
``caraway.dead_letters``; revocations on the fanout exchange ``caraway.revoked``, which
reach running brokers only (each binds its own exclusive queue on its first
``revocations`` call, like Celery's broadcast revoke); and a delay ladder of TTL queues
``caraway.delay.<seconds>`` that hands ETA messages back to their queue, so no worker
holds an unacked message past RabbitMQ's ``consumer_timeout`` (30 min by default).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import select
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import amqp

from caraway.engines.amqp.client import (
    CONNECTION_ERRORS,
    Link,
    parse_url,
)
from caraway.engines.amqp.fanout import AMQPFanout
from caraway.engines.base.broker import (
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
)
from caraway.engines.base.fanout import Fanout
from caraway.engines.base.topology import QueueDeclaration
from caraway.exceptions import OperationalError, Unreachable
from caraway.protocol import Message

logger = logging.getLogger("caraway.broker.amqp")


DEAD_LETTER_QUEUE = "caraway.dead_letters"
REVOKED_EXCHANGE = "caraway.revoked"
DELAY_PREFIX = "caraway.delay."
#: Rungs of the delay ladder (s). A deferred message comes back after the longest rung that
#: does not pass its ETA, then is deferred again or held; a few rungs keep the hops few.
DELAY_RUNGS = (1, 5, 30, 60, 300, 900, 3600, 14400)
#: Longest a worker holds an unacked ETA message before deferring it: half of RabbitMQ's
#: default consumer_timeout (30 min), which closes the channel of a consumer holding longer.
MAX_HOLD = 15 * 60.0
#: Longest the consuming connection is held in one read, so queued acks wait at most this.
DRAIN_SLICE = 0.05
#: Seconds to wait for publisher confirms of a batch.
CONFIRM_TIMEOUT = 30.0
#: basic.qos prefetch_count is an AMQP short.
MAX_PREFETCH = 65535
#: Basic properties py-amqp carries; anything else a Message holds stays off the wire.
AMQP_PROPERTIES = frozenset(
    {
        "delivery_mode", "priority", "correlation_id", "reply_to", "expiration",
        "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
    }
)  # fmt: skip
#: What makes the consumer reconnect: a lost connection, or a failed attempt to reopen it.
RECONNECT_ON: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, OperationalError)
DEAD_HEADERS = ("x-caraway-reason", "x-caraway-queue", "x-caraway-failed-at")


class AMQPBroker(Broker):
    capabilities = BrokerCapabilities(
        broadcast=True,
        keeps_revocations=False,  # a fanout: only brokers already bound hear it
        loses_deliveries=True,  # delivery tags die with their channel
        max_hold=MAX_HOLD,
        exchanges=True,
    )

    def uses_tls(self) -> bool:
        return self.url.partition("://")[0].lower() == "amqps"

    def fanout(self) -> Fanout:
        return AMQPFanout(self)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        opts = self.options
        consumer_params = parse_url(url, opts)
        # Only the consuming connection beats: it is the long-lived one (broker_heartbeat is
        # "worker side"); the publishing one notices a dead peer on its next publish.
        publisher_params = parse_url(url, {**opts, "heartbeat": 0})
        self.params = consumer_params
        self.heartbeat_rate = float(opts.get("broker_heartbeat_checkrate") or 2.0)
        if "max_hold" in opts:
            hold = None if opts["max_hold"] is None else float(opts["max_hold"])
            self.capabilities = replace(self.capabilities, max_hold=hold)
        self.confirm_timeout = float(opts.get("confirm_timeout", CONFIRM_TIMEOUT))
        self._default_queue = str(opts.get("task_default_queue") or "celery")
        self._max_priority = opts.get("task_queue_max_priority")
        # Transport option: x-max-priority on every task queue, routed to or not.
        self._every_max_priority = opts.get("queue_max_priority")
        self._configured = _configured_queue_arguments(opts.get("task_queues"))
        self._extra_arguments = dict(opts.get("queue_arguments") or {})
        # Queues bound otherwise than in the plain layout (task_queues' exchanges).
        self._declarations: dict[str, QueueDeclaration] = {}
        self._consumer = Link(consumer_params)
        self._publisher = Link(publisher_params, self._enable_confirms)
        # Consumer side state (guarded by _state for the parts pool threads touch).
        self._state = threading.Lock()
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._unsettled: dict[Any, Delivery] = {}
        self._pending: collections.deque[tuple[str, Any]] = collections.deque()
        self._consuming: dict[str, str] = {}  # queue -> consumer tag
        self._cancelled: set[str] = set()  # queues the worker stopped consuming
        self._tag_queue: dict[str, str] = {}
        self._consumer_generation = 0
        self._qos_window: int | None = None
        self._qos_applied: int | None = None
        # Publisher side state (guarded by the publisher link's lock).
        self._sent = 0
        self._unconfirmed: set[int] = set()
        self._nacked: set[int] = set()
        self._revocation_queue: str | None = None
        self._revocation_generation = 0
        self._revocations_seen = 0
        self._keeper: threading.Thread | None = None
        self._closing = threading.Event()

    # --- topology ----------------------------------------------------------------------

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """The ``x-`` arguments ``queue`` is declared with (empty unless configured)."""
        configured = queue == self._default_queue or queue in self._configured
        arguments = dict(self._configured.get(queue) or {})
        arguments.update(self._extra_arguments.get(queue) or {})
        if queue == self._default_queue:
            kind = self.options.get("task_default_queue_type") or "classic"
        else:
            kind = self.options.get("task_create_missing_queue_type") or "classic"
        if kind == "quorum" and queue not in self._configured:
            arguments.setdefault("x-queue-type", "quorum")
        quorum = arguments.get("x-queue-type") == "quorum"
        max_priority = self._every_max_priority or (configured and self._max_priority)
        if max_priority and not quorum:
            arguments.setdefault("x-max-priority", int(max_priority))
        return arguments

    def _declare_queue(self, link: Link, channel: Any, queue: str) -> None:
        """The queue, its exchange (with its type) and the binding, once per connection."""
        if queue in link.declared:
            return
        bound = self._declarations.get(queue) or QueueDeclaration.plain(queue)
        channel.exchange_declare(
            bound.exchange, bound.exchange_type,
            durable=bound.exchange_durable, auto_delete=bound.exchange_auto_delete,
        )  # fmt: skip
        arguments = {**self.queue_arguments(queue), **bound.arguments}
        channel.queue_declare(
            queue, durable=bound.durable, exclusive=bound.exclusive,
            auto_delete=bound.auto_delete, arguments=arguments or None,
        )  # fmt: skip
        channel.queue_bind(queue, bound.exchange, bound.routing_key)
        link.declared.add(queue)

    def declare(self, queue: str) -> None:
        self._publisher.call(
            f"declaring {queue!r}", lambda ch: self._declare_queue(self._publisher, ch, queue)
        )

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        """Declare the queue and its binding now, so messages routed before the worker
        consumes reach it. An exclusive queue belongs to the consuming connection."""
        queue = declaration.queue
        self._declarations[queue] = declaration
        if not declaration.exclusive:
            self.declare(queue)
            return
        link = self._consumer
        with link.lock:
            self._declare_queue(link, link.open(), queue)

    # --- publishing ----------------------------------------------------------------------

    def _enable_confirms(self, channel: Any) -> None:
        self._sent = 0
        self._unconfirmed.clear()
        self._nacked.clear()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_confirm)
        channel.events["basic_nack"].add(self._on_nack)

    def _on_confirm(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        nacked = {t for t in self._unconfirmed if t <= delivery_tag} if multiple else {delivery_tag}
        self._nacked |= nacked
        self._unconfirmed -= nacked

    def _send(self, channel: Any, message: amqp.Message, exchange: str, routing_key: str) -> None:
        channel.basic_publish(message, exchange=exchange, routing_key=routing_key)
        self._sent += 1
        self._unconfirmed.add(self._sent)

    def _wait_confirms(self) -> None:
        """Block until RabbitMQ confirmed everything sent (all published first: pipelined)."""
        deadline = time.monotonic() + self.confirm_timeout
        conn = self._publisher.conn
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no publisher confirm within {self.confirm_timeout}s")
            try:
                conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            count = len(self._nacked)
            self._nacked.clear()
            raise amqp.exceptions.MessageNacked(f"RabbitMQ refused {count} message(s)")

    def publish(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return

        def run(channel: Any) -> None:
            for item in batch:
                bound = item.declaration
                if bound is not None:
                    self._declarations.setdefault(bound.queue, bound)
                    self._declare_queue(self._publisher, channel, bound.queue)
                message = _to_amqp(item.message, item.priority)
                if item.exchange:  # the exchange exists: workers and task_queues declare it
                    self._send(channel, message, item.exchange, item.routing_key)
                else:
                    if bound is None:
                        self._declare_queue(self._publisher, channel, item.queue)
                    self._send(channel, message, "", item.queue)
            self._wait_confirms()

        self._publisher.call("publishing", run)

    def _republish(self, message: Message, exchange: str, routing_key: str, doing: str) -> None:
        """Publish one copy with confirms (to a dead-letter, delay or revocation target)."""

        def run(channel: Any) -> None:
            self._ensure_aux(channel, exchange or routing_key)
            self._send(channel, _to_amqp(message, 0), exchange, routing_key)
            self._wait_confirms()

        self._publisher.call(doing, run)

    def _ensure_aux(self, channel: Any, name: str) -> None:
        """Declare the dead-letter queue, a delay rung or the revocation exchange once."""
        link = self._publisher
        if name in link.declared:
            return
        if name == DEAD_LETTER_QUEUE:
            channel.queue_declare(name, durable=True, exclusive=False, auto_delete=False)
        elif name == REVOKED_EXCHANGE:
            channel.exchange_declare(name, "fanout", durable=True, auto_delete=False)
        elif name.startswith(DELAY_PREFIX):
            seconds = int(name.removeprefix(DELAY_PREFIX))
            channel.exchange_declare(name, "fanout", durable=True, auto_delete=False)
            channel.queue_declare(
                name, durable=True, exclusive=False, auto_delete=False,
                arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": ""},
            )  # fmt: skip
            channel.queue_bind(name, name, "")
        link.declared.add(name)

    # --- consuming -------------------------------------------------------------------------

    def qos(self, prefetch_count: int) -> None:
        """The consumer's window: RabbitMQ sends at most this many unacked messages.

        Never fewer, as Celery's prefetch count: a task acked as it starts makes room for
        the next message, which leaves the queue (a message waiting there is dropped by
        RabbitMQ when its ``expiration`` passes, and nobody stores it as REVOKED). The
        limit grows by the ETA messages the worker holds (they stay unacked but free their
        slot), as Celery raises its prefetch count for them.
        """
        self._qos_window = max(1, int(prefetch_count))

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Deliveries, or ``Unreachable`` when the connection is lost (the worker retries)."""
        deadline = time.monotonic() + timeout
        link = self._consumer
        try:
            while True:
                with link.lock:
                    if link.take_loss():  # another thread saw it close: report it once
                        raise Unreachable(f"AMQP broker {self.describe()}: connection lost")
                    self._flush_locked()
                    self._start_consuming(queues, limit)
                    found = self._take(queues, limit)
                    remaining = deadline - time.monotonic()
                    if not found and remaining > 0:
                        self._drain_locked(min(remaining, DRAIN_SLICE))
                        found = self._take(queues, limit)
                self._try_flush()  # acks queued while this fetch held the connection
                if found or deadline - time.monotonic() <= 0:
                    return found
        except RECONNECT_ON as exc:
            with link.lock:
                link.drop()
                link.take_loss()  # reported here, by the raise
            if isinstance(exc, OperationalError) and not isinstance(exc, Unreachable):
                raise  # a channel error (a queue's arguments refused...) is not an outage
            if isinstance(exc, Unreachable):
                raise
            raise Unreachable(f"AMQP broker {self.describe()}: consuming failed: {exc!r}") from exc

    def connect(self) -> None:
        with self._consumer.lock:
            self._consumer.open()

    def _start_consuming(self, queues: Sequence[str], limit: int) -> None:
        """Connect, declare and consume what is missing; adjust the prefetch limit."""
        link = self._consumer
        channel = link.open()
        if self._consumer_generation != link.generation:
            # A new connection: whatever the old one delivered comes back from RabbitMQ.
            self._consumer_generation = link.generation
            with self._state:
                self._buffer.clear()
                self._unsettled.clear()
                self._pending.clear()
            self._consuming.clear()
            self._tag_queue.clear()
            self._qos_applied = None
            self._start_keeper()
        with self._state:
            held = len(self._unsettled)
        target = min(MAX_PREFETCH, max(1, held + limit, self._qos_window or 0))
        if target != self._qos_applied:
            # Channel-wide (RabbitMQ's reading of global=True), so a change applies to the
            # running consumers at once. Quorum queues do not support it: per consumer there.
            quorum = any(self.queue_arguments(q).get("x-queue-type") == "quorum" for q in queues)
            if not (quorum and self._qos_applied is not None):
                channel.basic_qos(0, target, not quorum)
            self._qos_applied = target
        for queue in queues:
            if queue not in self._consuming and queue not in self._cancelled:
                self._declare_queue(link, channel, queue)
                tag = channel.basic_consume(
                    queue, callback=self._on_message, on_cancel=self._on_cancel
                )
                self._consuming[queue] = tag
                self._tag_queue[tag] = queue

    def stop_consuming(self, queue: str) -> None:
        """Cancel the consumer of ``queue``; what it delivered and nobody took goes back."""
        link = self._consumer
        with link.lock:
            # A fetch already running was handed the old queue list: it must not consume
            # the queue again.
            self._cancelled.add(queue)
            tag = self._consuming.pop(queue, None)
            if tag is None or link.channel is None:
                return
            self._tag_queue.pop(tag, None)
            with self._state:
                kept = [d for d in self._buffer if d.queue != queue]
                returned = [d for d in self._buffer if d.queue == queue]
                self._buffer.clear()
                self._buffer.extend(kept)
            try:
                link.channel.basic_cancel(tag)
                for delivery in returned:
                    link.channel.basic_reject(delivery.tag[1], requeue=True)
            except CONNECTION_ERRORS as exc:  # the new connection will not consume it
                link.drop()
                logger.warning("Lost the connection while cancelling %r: %s", queue, exc)

    def resume_consuming(self, queue: str) -> None:
        with self._consumer.lock:
            self._cancelled.discard(queue)

    def _on_message(self, raw: amqp.Message) -> None:
        info = raw.delivery_info
        queue = self._tag_queue.get(info.get("consumer_tag"), info.get("routing_key", ""))
        tag = (self._consumer.generation, info["delivery_tag"])
        delivery = Delivery(
            _from_amqp(raw), queue, tag, bool(info.get("redelivered")),
            exchange=str(info.get("exchange") or ""), routing_key=info.get("routing_key"),
        )  # fmt: skip
        with self._state:
            self._buffer.append(delivery)

    def _on_cancel(self, consumer_tag: str) -> None:
        """RabbitMQ cancelled a consumer (queue deleted): consume it again on the next fetch."""
        queue = self._tag_queue.pop(consumer_tag, None)
        if queue is not None:
            self._consuming.pop(queue, None)
            self._consumer.declared.discard(queue)
            logger.warning("RabbitMQ cancelled the consumer of %r; consuming it again", queue)

    def _take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        wanted = set(queues)
        found: list[Delivery] = []
        with self._state:
            kept: list[Delivery] = []
            while self._buffer and len(found) < limit:
                delivery = self._buffer.popleft()
                if delivery.queue in wanted:
                    found.append(delivery)
                    self._unsettled[delivery.tag] = delivery
                else:
                    kept.append(delivery)
            self._buffer.extendleft(reversed(kept))
        return found

    def lost(self, tags: Collection[Any]) -> set[Any]:
        """Tags of a consuming channel that closed since: RabbitMQ requeued their messages
        and delivers them again, and a tag means nothing on another channel.

        Reads what waits on the connection first, so a connection RabbitMQ just closed
        counts as closed; if another thread holds the connection, waits for it only when
        data waits (it may be that close).
        """
        link = self._consumer
        # Waits for the lock only when data waits (it may be the close): a job must not start
        # from a channel that is already gone, or it runs twice.
        conn = link.conn
        if link.lock.acquire(blocking=conn is not None and _readable(conn)):
            try:
                self._poll_locked()
            finally:
                link.lock.release()
        # ``open`` sets the generation before the channel: read them in the other order.
        generation = None if link.channel is None else link.generation
        return {tag for tag in tags if tag[0] != generation}

    def _poll_locked(self) -> None:
        """Handle the frames already received, without waiting for more."""
        link = self._consumer
        if link.conn is None:
            return
        if getattr(link.conn, "_transport", None) is None:  # closed; a read would reopen it
            link.drop()
            return
        if not _readable(link.conn):
            return
        try:
            with contextlib.suppress(TimeoutError):
                link.conn.drain_events(timeout=0.001)
        except CONNECTION_ERRORS as exc:
            link.drop()  # first: ``lost`` reads the channel without the lock
            logger.debug("Lost the broker connection (%s)", exc)  # the consumer says it

    def _drain_locked(self, timeout: float) -> None:
        conn = self._consumer.conn
        try:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=timeout)
            conn.heartbeat_tick(rate=self.heartbeat_rate)
        except CONNECTION_ERRORS:
            self._consumer.drop()  # under the lock: ``lost`` sees it at once
            raise
        self._flush_locked()

    # --- settling (any thread) --------------------------------------------------------------

    def _settle(self, op: str, tags: Sequence[Any]) -> None:
        with self._state:
            for tag in tags:
                if self._unsettled.pop(tag, None) is not None:
                    self._pending.append((op, tag))
        self._try_flush()

    def _try_flush(self) -> None:
        """Send queued acks now if the consuming connection is free; else its holder will.

        Every holder calls this after letting the connection go, so an ack queued while it
        held it is sent then, not when the next fetch comes (the window may be full) or the
        keeper wakes: until RabbitMQ has the ack, it sends no message in its place.
        """
        link = self._consumer
        while self._pending and link.lock.acquire(blocking=False):
            try:
                self._flush_locked()
            except CONNECTION_ERRORS as exc:
                link.drop()  # the consumer reports the loss; RabbitMQ redelivers
                logger.debug("Could not ack on %s (%s): RabbitMQ will redeliver", self, exc)
                return
            finally:
                link.lock.release()

    def _flush_locked(self) -> None:
        channel, generation = self._consumer.channel, self._consumer.generation
        while True:
            with self._state:
                if not self._pending:
                    return
                op, (tag_generation, delivery_tag) = self._pending.popleft()
            if channel is None or tag_generation != generation:
                continue  # delivered on a closed channel: RabbitMQ redelivers it
            if op == "ack":
                channel.basic_ack(delivery_tag)
            else:
                channel.basic_reject(delivery_tag, requeue=True)

    def ack(self, tags: Sequence[Any]) -> None:
        self._settle("ack", tags)

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        requeue = list(tags)
        if delay >= DELAY_RUNGS[0]:
            with self._state:
                held = [self._unsettled[tag] for tag in tags if tag in self._unsettled]
            delayed = {d.tag for d in held if self._delay(d, delay)}
            self._settle("ack", list(delayed))
            requeue = [tag for tag in tags if tag not in delayed]
        self._settle("requeue", requeue)

    def defer(self, delivery: Delivery, until: float) -> bool:
        """Send ``delivery`` down the delay ladder and ack it; False if its ETA is too near."""
        if self.lost([delivery.tag]):
            return False  # it cannot be acked: a copy down the ladder would be a second one
        try:
            if not self._delay(delivery, until - self.clock.time()):
                return False
        except OperationalError as exc:
            logger.warning("Could not defer %s (%s): holding it", delivery.message.task_id, exc)
            return False
        self._settle("ack", [delivery.tag])
        return True

    def _delay(self, delivery: Delivery, seconds: float) -> bool:
        rungs = [rung for rung in DELAY_RUNGS if rung <= seconds]
        if not rungs:
            return False
        name = f"{DELAY_PREFIX}{rungs[-1]}"
        self._republish(delivery.message, name, delivery.queue, "deferring a message")
        return True

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        message = delivery.message
        headers = {
            **message.headers,
            "x-caraway-reason": reason,
            "x-caraway-queue": delivery.queue,
            "x-caraway-failed-at": self.clock.time(),
        }
        copy = Message(
            headers, message.properties, message.body, message.content_type,
            message.content_encoding,
        )  # fmt: skip
        self._republish(copy, "", DEAD_LETTER_QUEUE, "setting a message aside")
        self._settle("ack", [delivery.tag])
        return f"queue {DEAD_LETTER_QUEUE} of {self.describe()}"

    # --- inspection -----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        return self._passive(queue, "purging", lambda ch: int(ch.queue_purge(queue) or 0))

    def size(self, queue: str) -> int:
        return self._passive(
            queue, "sizing", lambda ch: int(ch.queue_declare(queue, passive=True).message_count)
        )

    def queue_stats(self, queue: str) -> QueueStats:
        """Depth and consumers from a passive declare: all AMQP itself tells without
        consuming (the management plugin's HTTP API would tell more; it is not used)."""
        counted: list[int] = []

        def declare(channel: Any) -> int:
            answer = channel.queue_declare(queue, passive=True)
            counted.append(int(answer.consumer_count))
            return int(answer.message_count)

        messages = self._passive(queue, "counting", declare)
        return QueueStats(messages, consumers=counted[-1] if counted else 0, unknown={
            "by_priority": "RabbitMQ does not say how many messages wait at each priority",
            "oldest_age": "RabbitMQ shows a message's age only to whoever consumes it",
        })  # fmt: skip

    def _passive(self, queue: str, doing: str, fun: Callable[[Any], int]) -> int:
        """``fun`` on a queue that may not exist: a missing queue has no messages."""
        try:
            return self._publisher.call(f"{doing} {queue!r}", fun)
        except OperationalError as exc:
            if isinstance(exc.__cause__, amqp.exceptions.NotFound):
                return 0
            raise

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Read the set-aside messages, then put them all back (looking loses nothing)."""

        def run(channel: Any) -> list[DeadLetter]:
            self._ensure_aux(channel, DEAD_LETTER_QUEUE)
            letters: list[DeadLetter] = []
            tags: list[int] = []
            try:
                while len(letters) < limit:
                    raw = channel.basic_get(DEAD_LETTER_QUEUE, no_ack=False)
                    if raw is None:
                        break
                    tags.append(raw.delivery_info["delivery_tag"])
                    letters.append(_dead_letter(_from_amqp(raw)))
            finally:
                for tag in tags:
                    channel.basic_reject(tag, requeue=True)
            return letters

        return self._publisher.call("reading dead letters", run)

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        """Find ``key`` among the set-aside messages; the others go back untouched."""

        def run(channel: Any) -> bool:
            self._ensure_aux(channel, DEAD_LETTER_QUEUE)
            others: list[int] = []
            try:
                while True:
                    raw = channel.basic_get(DEAD_LETTER_QUEUE, no_ack=False)
                    if raw is None:
                        return False
                    tag = raw.delivery_info["delivery_tag"]
                    letter = _dead_letter(_from_amqp(raw))
                    if letter.key != key:
                        others.append(tag)
                        continue
                    if requeue:  # published and confirmed before the dead letter goes
                        self._send(channel, _to_amqp(letter.message, 0), "", letter.queue)
                        self._wait_confirms()
                    channel.basic_ack(tag)
                    return True
            finally:
                for tag in others:
                    channel.basic_reject(tag, requeue=True)

        return self._publisher.call("settling a dead letter", run)

    # --- revocations -----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        body = json.dumps({"task_ids": list(task_ids), "terminate": terminate}).encode()
        message = Message({}, {"delivery_mode": 1}, body)
        self._republish(message, REVOKED_EXCHANGE, "", "broadcasting a revocation")

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        """Revocations broadcast since this broker's first call (the cursor counts them)."""

        def run(channel: Any) -> list[tuple[str, bool]]:
            link = self._publisher
            if self._revocation_queue is None or self._revocation_generation != link.generation:
                self._ensure_aux(channel, REVOKED_EXCHANGE)
                name = f"caraway.revoked.{uuid.uuid4().hex}"
                channel.queue_declare(name, exclusive=True, auto_delete=True)
                channel.queue_bind(name, REVOKED_EXCHANGE, "")
                self._revocation_queue, self._revocation_generation = name, link.generation
            found: list[tuple[str, bool]] = []
            while (raw := channel.basic_get(self._revocation_queue, no_ack=True)) is not None:
                data = json.loads(raw.body)
                found.extend((str(tid), bool(data["terminate"])) for tid in data["task_ids"])
            return found

        try:
            found = self._publisher.call("reading revocations", run)
        except OperationalError as exc:
            if not isinstance(exc.__cause__, amqp.exceptions.NotFound):
                raise
            # The queue went with its vhost or a broker restart, and the connection with it:
            # an outage, reported by the consumer; the next read declares a new queue.
            self._revocation_queue = None
            raise Unreachable(str(exc)) from exc
        self._revocations_seen = max(self._revocations_seen, cursor) + len(found)
        return found, self._revocations_seen

    # --- upkeep ---------------------------------------------------------------------------

    def _start_keeper(self) -> None:
        """A light thread that sends queued acks and heartbeats while nobody fetches."""
        if self._keeper is not None or (not self.params.heartbeat and self._qos_window is None):
            return
        self._closing.clear()
        self._keeper = threading.Thread(target=self._keep, name="caraway-amqp", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        interval = min(1.0, (self.params.heartbeat or 4.0) / 4)
        link = self._consumer
        while not self._closing.wait(interval):
            if not link.lock.acquire(blocking=False):
                continue  # a fetch holds it, and services the connection itself
            try:
                if link.conn is not None:
                    self._flush_locked()
                    with contextlib.suppress(TimeoutError):
                        link.conn.drain_events(timeout=0.001)
                    link.conn.heartbeat_tick(rate=self.heartbeat_rate)
            except CONNECTION_ERRORS as exc:
                link.drop()
                logger.debug("Broker connection lost while idle (%s)", exc)  # the consumer says it
            finally:
                link.lock.release()
            self._try_flush()

    def close(self) -> None:
        self._closing.set()
        for link in (self._consumer, self._publisher):
            with link.lock:
                if link is self._consumer:
                    try:
                        if link.channel is not None:
                            self._flush_locked()
                    except CONNECTION_ERRORS:
                        pass
                link.drop()
        keeper, self._keeper = self._keeper, None
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(2.0)


def _readable(conn: amqp.Connection) -> bool:
    """Whether data waits on the connection's socket (or in its TLS buffer)."""
    # ``_transport``: the public property reconnects a closed connection on access.
    sock = getattr(getattr(conn, "_transport", None), "sock", None)
    if sock is None or sock.fileno() < 0 or not hasattr(select, "poll"):
        return True  # let the read find out
    try:
        if getattr(sock, "pending", lambda: 0)():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed by another thread meanwhile
        return True


def _configured_queue_arguments(task_queues: Any) -> dict[str, dict[str, Any]]:
    """``{name: queue_arguments}`` for the queues of ``task_queues`` (names, dicts, objects)."""
    found: dict[str, dict[str, Any]] = {}
    for queue in task_queues or ():
        if isinstance(queue, str):
            found[queue] = {}
        elif isinstance(queue, Mapping):
            found[str(queue["name"])] = dict(queue.get("queue_arguments") or {})
        else:
            found[str(queue.name)] = dict(getattr(queue, "queue_arguments", None) or {})
    return found


def _to_amqp(message: Message, priority: int) -> amqp.Message:
    properties = {k: v for k, v in message.properties.items() if k in AMQP_PROPERTIES}
    properties.setdefault("delivery_mode", 2)
    if priority:
        properties["priority"] = priority
    return amqp.Message(
        message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        application_headers=dict(message.headers),
        **properties,
    )


def _from_amqp(raw: amqp.Message) -> Message:
    properties = dict(raw.properties)
    headers = properties.pop("application_headers", None) or {}
    content_type = properties.pop("content_type", None) or "application/json"
    content_encoding = properties.pop("content_encoding", None) or "utf-8"
    body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode(content_encoding)
    return Message(dict(headers), properties, body, content_type, content_encoding)


def _dead_letter(message: Message) -> DeadLetter:
    headers = dict(message.headers)
    reason, queue, failed_at = (headers.pop(name, None) for name in DEAD_HEADERS)
    original = Message(
        headers, message.properties, message.body, message.content_type,
        message.content_encoding,
    )  # fmt: skip
    key = f"{headers.get('id', '')}@{failed_at!r}"
    return DeadLetter(original, str(queue or ""), str(reason or ""), float(failed_at or 0.0), key)
