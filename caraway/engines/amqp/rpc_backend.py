"""``rpc://``: results sent back as AMQP messages to the calling client (docs/celery-wire.md §4.7).

The worker publishes every state of a task to the default exchange with the message's
``reply_to`` (the client app's oid) as routing key, ``correlation_id`` = task id, and
``delivery_mode`` 1 (2 with ``result_persistent``). The client consumes the queue named
after its oid (``durable=False, auto_delete=True``, ``x-expires`` = ``result_expires``, as
Celery declares it) and keeps the latest meta of each task in memory: only the client that
sent a task can read its result, once per process, as in Celery. The connection is the
broker's: ``rpc://`` takes the AMQP URL of ``broker_url``.

The worker declares the reply queue too (same arguments) before its first reply, so a
result sent before the client starts reading is not dropped by RabbitMQ.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import amqp

from caraway import states
from caraway.engines.amqp.client import (
    CONNECTION_ERRORS,
    SCHEMES,
    Link,
    operational_error,
    parse_url,
)
from caraway.engines.base.backend import TASK_KEY_PREFIX, Backend, BackendCapabilities, Stored
from caraway.engines.base.broker import one_url
from caraway.exceptions import ImproperlyConfigured, OperationalError
from caraway.utils.text import mask_url

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

#: Backends whose ``incr`` works, named in the error ``incr`` raises here.
COUNTING_BACKENDS = "redis://, a SQL database (db+...) or sqlite://"


class RPCBackend(Backend):
    # Results go to the sender's reply queue only, declared before its first send.
    capabilities = BackendCapabilities(readable_by_workers=False, needs_reply_queue=True)

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        conf = app.conf
        broker_url = one_url(conf.broker_url) if conf.broker_url else None
        if not broker_url or str(broker_url).partition("://")[0].lower() not in SCHEMES:
            raise ImproperlyConfigured(
                f"the rpc:// result backend sends results over the AMQP broker, but broker_url"
                f" is {mask_url(str(broker_url or 'unset'))!r}: use an amqp:// broker, or"
                " another result backend (redis://, db+..., sqlite://)"
            )
        settings = {
            "broker_use_ssl": conf.broker_use_ssl,
            "broker_connection_timeout": conf.broker_connection_timeout,
            "broker_login_method": conf.broker_login_method,
            "broker_failover_strategy": conf.broker_failover_strategy,
            **self.options,
            "heartbeat": 0,
        }
        self.params = parse_url(str(broker_url), settings)
        self.delivery_mode = 2 if conf.result_persistent else 1
        self._writer = Link(self.params)
        self._reader = Link(self.params)
        self._consuming = False
        self._latest: dict[str, Stored] = {}
        self._latest_lock = threading.Lock()

    def describe(self) -> str:
        return f"rpc:// (over {self.params.describe()})"

    @property
    def oid(self) -> str:
        return self.app.oid

    def _declare_reply_queue(self, link: Link, channel: Any, name: str) -> None:
        if name in link.declared:
            return
        arguments = {"x-expires": int(self.expires * 1000)} if self.expires else None
        channel.queue_declare(
            name, durable=False, exclusive=False, auto_delete=True, arguments=arguments
        )
        link.declared.add(name)

    # --- writing (worker side) ---------------------------------------------------------------

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: Any,
    ) -> dict[str, Any]:
        meta = self.build_meta(task_id, result, state, traceback, request)
        reply_to = getattr(request, "reply_to", None)
        if not reply_to:
            # Nobody to send it to (no request, or a producer that set no reply_to).
            return meta
        stored = self.encode(meta)
        message = amqp.Message(
            stored.payload,
            content_type=stored.content_type,
            content_encoding=stored.content_encoding,
            application_headers={},
            delivery_mode=self.delivery_mode,
            priority=0,
            correlation_id=task_id,
        )
        link = self._writer
        with link.lock:
            for attempt in range(2):  # once more on a new connection if the old one died idle
                stale = link.channel is not None
                try:
                    self._send(link, message, reply_to)
                    break
                except CONNECTION_ERRORS as exc:
                    link.drop()
                    if attempt or not stale:
                        raise operational_error(self.params, exc, "sending a result") from exc
        return meta

    def _send(self, link: Link, message: amqp.Message, reply_to: str) -> None:
        channel = link.open()
        try:
            self._declare_reply_queue(link, channel, reply_to)
        except amqp.exceptions.PreconditionFailed:
            # Declared by a client with other arguments: it exists, which is enough.
            link.drop()
            channel = link.open()
            link.declared.add(reply_to)
        channel.basic_publish(message, exchange="", routing_key=reply_to)

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        """Kept in this process only: rpc:// has no shared store (groups live here, too)."""
        with self._latest_lock:
            self._remember(key.removeprefix(TASK_KEY_PREFIX), value, state)

    def delete_raw(self, key: str) -> None:
        with self._latest_lock:
            self._latest.pop(key.removeprefix(TASK_KEY_PREFIX), None)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        raise NotImplementedError(
            "the rpc:// result backend cannot keep counters (results are messages to one"
            f" client); use a backend that can count: {COUNTING_BACKENDS}"
        )

    # --- reading (client side) ---------------------------------------------------------------

    def get_raw(self, key: str) -> Stored | None:
        self._drain(0.0)
        with self._latest_lock:
            return self._latest.get(key.removeprefix(TASK_KEY_PREFIX))

    def wait_changed(self, key: str, timeout: float) -> None:
        self._drain(timeout)

    def on_task_call(self, task_id: str) -> None:
        """Declare and consume the reply queue before the first send, as Celery does.

        A reply that reaches RabbitMQ before the queue exists would be dropped.
        """
        if not self._consuming:
            self._drain(0.0)

    def _drain(self, timeout: float) -> None:
        """Read the replies that arrived (waiting up to ``timeout`` for the first one)."""
        with self._reader.lock:
            stale = self._reader.channel is not None
            try:
                self._drain_locked(timeout)
            except OperationalError:
                if not stale:
                    raise
                self._drain_locked(timeout)  # the connection died idle: once more on a new one

    def _drain_locked(self, timeout: float) -> None:
        link = self._reader
        try:
            channel = link.open()
            if not self._consuming or self.oid not in link.declared:
                self._declare_reply_queue(link, channel, self.oid)
                channel.basic_consume(self.oid, no_ack=True, callback=self._on_reply)
                self._consuming = True
            with contextlib.suppress(TimeoutError):
                link.conn.drain_events(timeout=max(timeout, 0.0))
                while True:  # then whatever else is already there, without waiting
                    link.conn.drain_events(timeout=0)
        except CONNECTION_ERRORS as exc:
            link.drop()
            self._consuming = False
            raise operational_error(self.params, exc, "reading results") from exc

    def _on_reply(self, raw: amqp.Message) -> None:
        properties = raw.properties
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode()
        stored = Stored(
            body,
            properties.get("content_type") or "application/json",
            properties.get("content_encoding") or "utf-8",
        )
        task_id = properties.get("correlation_id")
        if not task_id:
            task_id = self.decode(stored).get("task_id")
        state = None
        with contextlib.suppress(Exception):  # an undecodable reply still replaces older states
            state = self.decode(stored).get("status")
        with self._latest_lock:
            self._remember(str(task_id), stored, state)

    def _remember(self, task_id: str, stored: Stored, state: str | None) -> None:
        """Keep the latest state; a ready state is never replaced by a late non-ready one."""
        previous = self._latest.get(task_id)
        if previous is not None and state not in states.READY_STATES:
            with contextlib.suppress(Exception):  # replace what cannot be read
                if self.decode(previous).get("status") in states.READY_STATES:
                    return
        self._latest[task_id] = stored

    def close(self) -> None:
        for link in (self._writer, self._reader):
            with link.lock:
                link.drop()
        self._consuming = False
