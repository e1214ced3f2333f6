"""Broadcast through PostgreSQL: a row per message, announced by ``NOTIFY``.

A payload is limited to 8,000 bytes, less than a remote-control reply may take, so the
message goes to a table and the notification carries its id, exchange and routing key.
Each subscriber listens on its own connection and reads only the rows meant for it: an idle
subscriber runs no statement. Rows older than ``KEEP`` s are deleted by publishers.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import psycopg

from caraway import serialization
from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription, matches
from caraway.engines.postgresql.database import Database
from caraway.engines.postgresql.listener import Listener
from caraway.exceptions import Unreachable
from caraway.protocol import Message

if TYPE_CHECKING:
    from caraway.engines.postgresql.broker import PostgreSQLBroker

SCHEMA = """
CREATE TABLE IF NOT EXISTS {broadcast} (
    id bigserial PRIMARY KEY,
    sent_at double precision NOT NULL,
    headers text NOT NULL,
    properties text NOT NULL,
    body bytea NOT NULL,
    content_type text NOT NULL,
    content_encoding text NOT NULL
)
"""
#: Seconds a broadcast row is kept: longer than any control timeout, so no reader misses it.
KEEP = 120.0


class PostgreSQLFanout(Fanout):
    def __init__(self, broker: PostgreSQLBroker) -> None:
        self.db = Database(broker.url, broker.names)
        self.names = broker.names
        self._next_cleanup = 0.0

    def _schema(self) -> None:
        self.db.ensure_schema("broadcast", SCHEMA.format(broadcast=self.names.broadcast))

    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        self._schema()
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute(
                f"INSERT INTO {self.names.broadcast} (sent_at, headers, properties, body,"
                " content_type, content_encoding) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    now, serialization.json_dumps(message.headers).decode(),
                    serialization.json_dumps(message.properties).decode(), message.body,
                    message.content_type, message.content_encoding,
                ),
            ).fetchone()  # fmt: skip
            assert row is not None
            payload = json.dumps([row[0], exchange.name, routing_key])
            conn.execute("SELECT pg_notify(%s, %s)", (self.names.fanout_channel, payload))
            if now >= self._next_cleanup:
                conn.execute(f"DELETE FROM {self.names.broadcast} WHERE sent_at < %s",
                             (now - KEEP,))  # fmt: skip
                self._next_cleanup = now + KEEP / 4

    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        self._schema()
        listener = Listener(self.db, [self.names.fanout_channel])
        listener.open()  # listening from now: what is sent after this returns arrives
        return PostgreSQLSubscription(listener, self.names.broadcast, exchange, binding)

    def close(self) -> None:
        self.db.close()


class PostgreSQLSubscription(Subscription):
    def __init__(
        self, listener: Listener, table: str, exchange: Exchange, binding: Binding
    ) -> None:
        self.listener = listener
        self.table = table
        self.exchange = exchange
        self.binding = binding
        self._closed = False

    def _mine(self, payload: str) -> int | None:
        row_id, exchange, routing_key = json.loads(payload)
        wanted = exchange == self.exchange.name and matches(
            self.exchange, self.binding.routing_key, routing_key
        )
        return int(row_id) if wanted else None

    def get(self, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not self._closed:
            try:
                payloads = self.listener.wait(max(deadline - time.monotonic(), 0.0))
            except Unreachable:
                if self._closed:
                    break
                raise
            ids = [i for i in map(self._mine, payloads) if i is not None]
            if ids:
                return self._read(ids)
            if time.monotonic() >= deadline:
                break
        return []

    def _read(self, ids: list[int]) -> list[Message]:
        def work(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(
                "SELECT headers, properties, body, content_type, content_encoding"
                f" FROM {self.table} WHERE id = ANY(%s) ORDER BY id",
                (ids,),
            ).fetchall()

        return [
            Message(
                serialization.json_loads(headers), serialization.json_loads(properties),
                bytes(body), content_type, content_encoding,
            )
            for headers, properties, body, content_type, content_encoding in self.listener.run(work)
        ]  # fmt: skip

    def close(self) -> None:
        self._closed = True
        self.listener.close()
