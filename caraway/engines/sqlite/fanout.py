"""Broadcast through the embedded SQLite file: a table every subscriber reads past its cursor.

SQLite has no push between processes, so subscribers poll (``POLL`` s apart while idle,
woken at once by publishers in the same process). A subscriber starts at the newest row, so
it sees only what was sent after it subscribed; rows older than ``KEEP`` s are deleted.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from caraway import serialization
from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription, matches
from caraway.engines.sqlite.database import Database
from caraway.protocol import Message

if TYPE_CHECKING:
    from caraway.engines.sqlite.broker import SQLiteBroker

SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_broadcast (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    sent_at REAL NOT NULL,
    headers BLOB NOT NULL,
    properties BLOB NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS caraway_broadcast_exchange ON caraway_broadcast (exchange, id)
"""
#: Longest an idle subscriber waits between two reads: replies and requests within 50 ms.
POLL = 0.05
#: Seconds a broadcast row is kept: longer than any control timeout, so no reader misses it.
KEEP = 120.0

_sent = threading.Condition()


class SQLiteFanout(Fanout):
    def __init__(self, broker: SQLiteBroker) -> None:
        self.db = broker.db
        self._next_cleanup = 0.0

    def _conn(self) -> object:
        self.db.ensure_schema("broadcast", SCHEMA)
        return self.db.connection()

    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        self._conn()
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO caraway_broadcast (exchange, routing_key, sent_at, headers,"
                " properties, body, content_type, content_encoding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    exchange.name, routing_key, now, serialization.json_dumps(message.headers),
                    serialization.json_dumps(message.properties), message.body,
                    message.content_type, message.content_encoding,
                ),
            )  # fmt: skip
            if now >= self._next_cleanup:
                conn.execute("DELETE FROM caraway_broadcast WHERE sent_at < ?", (now - KEEP,))
                self._next_cleanup = now + KEEP / 4
        with _sent:
            _sent.notify_all()

    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        self._conn()
        row = self.db.connection().execute("SELECT max(id) FROM caraway_broadcast").fetchone()
        return SQLiteSubscription(self.db, exchange, binding, int(row[0] or 0))


class SQLiteSubscription(Subscription):
    def __init__(self, db: Database, exchange: Exchange, binding: Binding, cursor: int) -> None:
        self.db = db
        self.exchange = exchange
        self.binding = binding
        self.cursor = cursor
        self._closed = False

    def _read(self) -> list[Message]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT id, routing_key, headers, properties, body, content_type,"
                " content_encoding FROM caraway_broadcast WHERE exchange = ? AND id > ?"
                " ORDER BY id",
                (self.exchange.name, self.cursor),
            )
            .fetchall()
        )
        if rows:
            self.cursor = int(rows[-1][0])
        return [
            Message(
                serialization.json_loads(headers),
                serialization.json_loads(properties),
                bytes(body),
                content_type,
                content_encoding,
            )
            for _, key, headers, properties, body, content_type, content_encoding in rows
            if matches(self.exchange, self.binding.routing_key, key)
        ]

    def get(self, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while True:
            found = [] if self._closed else self._read()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            with _sent:
                _sent.wait(min(POLL, remaining))

    def close(self) -> None:
        self._closed = True  # unbound: nothing sent from now on is for this subscriber
        self.db.close_thread()
