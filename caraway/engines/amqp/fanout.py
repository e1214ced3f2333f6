"""Broadcast on RabbitMQ with Celery's topology (docs/celery-wire.md §4.1, §4.5).

Each subscriber has its own connection and an auto-delete queue (exclusive, with Celery's
``x-expires`` and ``x-message-ttl``) bound to the exchange, consumed without acks as kombu's
pidbox and event receiver do. Publishing shares one connection under a lock.
"""

from __future__ import annotations

import collections
import select
import threading
import time
from typing import TYPE_CHECKING, Any

import amqp

from caraway.engines.amqp.client import (
    CONNECTION_ERRORS,
    AMQPParams,
    close_quietly,
    connect,
    operational_error,
)
from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription
from caraway.protocol import Message
from caraway.utils.pid import after_fork_in_child

if TYPE_CHECKING:
    from caraway.engines.amqp.broker import AMQPBroker

#: Pause before reconnecting a subscriber whose connection was lost.
RECONNECT_PAUSE = 0.5


def _declare_exchange(channel: Any, exchange: Exchange) -> None:
    channel.exchange_declare(
        exchange.name, exchange.kind, durable=exchange.durable, auto_delete=False
    )


class AMQPFanout(Fanout):
    def __init__(self, broker: AMQPBroker) -> None:
        self.params: AMQPParams = broker.params
        self.confirm_timeout = broker.confirm_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None
        #: A second channel in confirm mode, for ``publish_routed`` only: each publish on it
        #: waits for its own ack, so no earlier ack is ever taken for a later message.
        self._confirming: Any = None
        self._declared: set[str] = set()
        after_fork_in_child(self._forget_parent)

    def _forget_parent(self) -> None:
        """In a forked child: publish on a connection of its own, never on the parent's."""
        self._lock = threading.Lock()
        self._conn = self._channel = self._confirming = None

    def _open(self, confirmed: bool = False) -> Any:
        if self._channel is None:
            self._conn = connect(self.params)
            self._channel = self._conn.channel()
            self._declared = set()
        if not confirmed:
            return self._channel
        if self._confirming is None:  # put in confirm mode by its first basic_publish_confirm
            self._confirming = self._conn.channel()
        return self._confirming

    def _drop(self) -> None:
        conn, self._conn, self._channel, self._confirming = self._conn, None, None, None
        close_quietly(conn)

    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        self._publish(exchange, routing_key, message, confirmed=False)

    def publish_routed(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        """With a publisher confirm: RabbitMQ acks once the message sits in the bound queues.
        Tasks go out on another connection, so without it a task sent just after a revoke
        could be routed first and start before the worker read the revoke (Celery's client
        sends both on one connection, which keeps them in order)."""
        self._publish(exchange, routing_key, message, confirmed=True)

    def _publish(
        self, exchange: Exchange, routing_key: str, message: Message, confirmed: bool
    ) -> None:
        properties = {
            k: v for k, v in message.properties.items() if k in ("delivery_mode", "priority")
        }
        raw = amqp.Message(
            message.body,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            application_headers=dict(message.headers),
            **properties,
        )
        with self._lock:
            for attempt in (1, 2):  # a connection idle for long may have died: one retry
                try:
                    channel = self._open(confirmed)
                    if exchange.name not in self._declared:
                        _declare_exchange(channel, exchange)
                        self._declared.add(exchange.name)
                    if confirmed:
                        channel.basic_publish_confirm(
                            raw, exchange=exchange.name, routing_key=routing_key,
                            confirm_timeout=self.confirm_timeout,
                        )  # fmt: skip
                    else:
                        channel.basic_publish(raw, exchange=exchange.name, routing_key=routing_key)
                    return
                except CONNECTION_ERRORS as exc:
                    self._drop()
                    if attempt == 2:
                        raise operational_error(
                            self.params, exc, f"publishing to {exchange.name!r}"
                        ) from exc

    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        return AMQPSubscription(self.params, exchange, binding)

    def close(self) -> None:
        with self._lock:
            self._drop()


class AMQPSubscription(Subscription):
    def __init__(self, params: AMQPParams, exchange: Exchange, binding: Binding) -> None:
        self.params = params
        self.exchange = exchange
        self.binding = binding
        self._inbox: collections.deque[Message] = collections.deque()
        #: How many messages the last ``get`` returned: the reader is busy with them until it
        #: calls ``get`` again.
        self._handed = 0
        self._conn: Any = None
        self._closed = False
        self._open()

    def _open(self) -> None:
        conn = connect(self.params)
        try:
            channel = conn.channel()
            _declare_exchange(channel, self.exchange)
            arguments: dict[str, Any] = {}
            if self.binding.expires:
                arguments["x-expires"] = int(self.binding.expires * 1000)
            if self.binding.message_ttl:
                arguments["x-message-ttl"] = int(self.binding.message_ttl * 1000)
            queue = self.binding.queue
            channel.queue_declare(
                queue, durable=False, exclusive=self.binding.exclusive, auto_delete=True,
                arguments=arguments or None,
            )  # fmt: skip
            channel.queue_bind(queue, self.exchange.name, self.binding.routing_key)
            channel.basic_consume(queue, no_ack=True, callback=self._on_message)
        except CONNECTION_ERRORS as exc:
            close_quietly(conn)
            raise operational_error(self.params, exc, f"binding {self.binding.queue!r}") from exc
        self._conn = conn

    def _on_message(self, raw: amqp.Message) -> None:
        properties = dict(raw.properties)
        headers = properties.pop("application_headers", None) or {}
        content_type = properties.pop("content_type", None) or "application/json"
        content_encoding = properties.pop("content_encoding", None) or "utf-8"
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode()
        self._inbox.append(Message(dict(headers), properties, body, content_type, content_encoding))

    def get(self, timeout: float) -> list[Message]:
        self._handed = 0
        deadline = time.monotonic() + timeout
        while not self._inbox and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                if self._conn is None:
                    self._open()
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                break
            except CONNECTION_ERRORS:
                close_quietly(self._conn)
                self._conn = None
                time.sleep(min(RECONNECT_PAUSE, max(0.0, deadline - time.monotonic())))
            except Exception:
                # ``_open`` failing again (OperationalError): retried on the next call
                self._conn = None
                time.sleep(min(RECONNECT_PAUSE, max(0.0, deadline - time.monotonic())))
        found = list(self._inbox)
        self._handed = len(found)
        self._inbox.clear()
        return found

    def pending(self) -> bool:
        """Bytes waiting on the socket, or messages read that the reader has not finished
        with: a poll, no read (the reading thread owns the connection)."""
        if self._inbox or self._handed:
            return True
        transport = getattr(self._conn, "transport", None)
        sock = getattr(transport, "sock", None)
        if sock is None:
            return False
        if getattr(transport, "_read_buffer", b""):
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):  # closed meanwhile: nothing more will be read from it
            return False
        return bool(readable)

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        close_quietly(conn)
