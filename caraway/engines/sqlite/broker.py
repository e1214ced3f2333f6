"""``sqlite:///path``: the embedded default broker, durable in one file.

Messages are leased, not deleted, when delivered: a consumer that dies (its process is gone,
or it stopped renewing) gives its messages back. ETA messages wait in the file with a
``visible_at`` time, so they survive restarts and no worker holds them in memory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from caraway import serialization
from caraway.engines.base.broker import (
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
)
from caraway.engines.base.fanout import Fanout
from caraway.engines.base.topology import QueueDeclaration, fan_out, published_with
from caraway.engines.sqlite.database import Database, path_from_url
from caraway.engines.sqlite.fanout import SQLiteFanout
from caraway.protocol import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    redelivered INTEGER NOT NULL DEFAULT 0,
    headers BLOB NOT NULL,
    properties BLOB NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS caraway_messages_ready
    ON caraway_messages (queue, priority DESC, id);
CREATE INDEX IF NOT EXISTS caraway_messages_owner ON caraway_messages (lease_owner);
CREATE TABLE IF NOT EXISTS caraway_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL,
    headers BLOB NOT NULL,
    properties BLOB NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_revoked (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    terminate INTEGER NOT NULL DEFAULT 0,
    revoked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_bindings (
    exchange TEXT NOT NULL,
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    exchange_type TEXT NOT NULL,
    owner TEXT,
    PRIMARY KEY (exchange, queue)
)
"""
#: ``caraway_bindings.owner`` is set for auto-delete queues (a ``Broadcast`` queue): they go
#: with the broker that declared them, on close, or once its process is found dead.
DEAD_LETTER_TABLE = "caraway_dead_letters"
#: Seconds a delivered message stays leased without renewal (``visibility_timeout``).
DEFAULT_LEASE = 60.0
#: Polling bounds while idle: fast enough for sub-millisecond pick-up under load,
#: cheap enough (20 queries/s at most) when nothing happens.
MIN_POLL, MAX_POLL = 0.0005, 0.05

# Wakes consumers in this process at once when a producer in this process publishes.
_published = threading.Condition()


class SQLiteBroker(Broker):
    capabilities = BrokerCapabilities(
        native_delay=True, leases=True, lease_seconds=DEFAULT_LEASE, reclaims_orphans=True,
        broadcast=True, keeps_results=True, exchanges=True,
    )  # fmt: skip

    def fanout(self) -> Fanout:
        return SQLiteFanout(self)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.db = Database.open(path_from_url(url))
        self.lease_seconds = float(self.options.get("visibility_timeout", DEFAULT_LEASE))
        self.capabilities = replace(self.capabilities, lease_seconds=self.lease_seconds)
        self.max_poll = float(self.options.get("polling_interval", MAX_POLL))
        self.hostname = socket.gethostname()
        self.owner = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._ready = False

    def _conn(self) -> Any:
        if not self._ready:
            self.db.ensure_schema("broker", SCHEMA)
            self._ready = True
        return self.db.connection()

    def describe(self) -> str:
        return f"sqlite:///{self.db.path}"  # SQLAlchemy form: 4 slashes for /abs/path

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        self._conn()
        with self.db.write() as conn:
            self._bind(conn, declaration)

    def _bind(self, conn: Any, bound: QueueDeclaration) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO caraway_bindings (exchange, queue, routing_key,"
            " exchange_type, owner) VALUES (?, ?, ?, ?, ?)",
            (bound.exchange, bound.queue, bound.routing_key, bound.exchange_type,
             self.owner if bound.auto_delete else None),
        )  # fmt: skip

    def _bindings(self, conn: Any, exchanges: Sequence[str]) -> dict[str, list[QueueDeclaration]]:
        """The bindings of ``exchanges``; those of dead processes' auto-delete queues are
        removed on the way, with their messages."""
        found: dict[str, list[QueueDeclaration]] = {}
        marks = ",".join("?" * len(exchanges))
        rows = conn.execute(
            "SELECT exchange, queue, routing_key, exchange_type, owner FROM caraway_bindings"
            f" WHERE exchange IN ({marks})",
            list(exchanges),
        ).fetchall()
        for exchange, queue, key, kind, owner in rows:
            if owner and owner != self.owner and self._is_dead(owner):
                self._unbind(conn, exchange, queue)
                continue
            found.setdefault(exchange, []).append(QueueDeclaration(queue, exchange, kind, key))
        return found

    def _unbind(self, conn: Any, exchange: str, queue: str) -> None:
        conn.execute("DELETE FROM caraway_bindings WHERE exchange = ? AND queue = ?",
                     (exchange, queue))  # fmt: skip
        conn.execute("DELETE FROM caraway_messages WHERE queue = ?", (queue,))

    def publish(self, batch: Sequence[Outgoing]) -> None:
        self._conn()
        if any(item.exchange or item.declaration for item in batch):
            with self.db.write() as conn:  # the bindings read and the messages: one commit
                self._publish(self._routed(conn, batch))
        else:
            self._publish(batch)

    def _routed(self, conn: Any, batch: Sequence[Outgoing]) -> list[Outgoing]:
        for bound in {item.declaration for item in batch if item.declaration is not None}:
            self._bind(conn, bound)
        tables = self._bindings(conn, list({item.exchange for item in batch if item.exchange}))
        return fan_out(batch, lambda exchange: tables.get(exchange, ()))

    def _publish(self, batch: Sequence[Outgoing]) -> None:
        now = self.clock.time()
        rows = [
            (
                item.queue,
                item.priority,
                now if item.deliver_at is None else item.deliver_at,
                serialization.json_dumps(item.message.headers),
                serialization.json_dumps(item.message.properties),
                item.message.body,
                item.message.content_type,
                item.message.content_encoding,
            )
            for item in batch
        ]
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO caraway_messages (queue, priority, visible_at, headers, properties,"
                " body, content_type, content_encoding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        with _published:
            _published.notify_all()

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        # How long to wait is real time; what is visible is read on ``clock`` at each poll.
        deadline = time.monotonic() + timeout
        poll = MIN_POLL
        while True:
            found = self._lease(queues, limit)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            with _published:
                _published.wait(min(poll, remaining))
            poll = min(poll * 2, self.max_poll)

    def _lease(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        conn = self._conn()
        now = self.clock.time()
        marks = ",".join("?" * len(queues))
        rows = conn.execute(
            "UPDATE caraway_messages SET lease_owner = ?, lease_until = ?,"
            " redelivered = redelivered OR lease_until IS NOT NULL"
            " WHERE id IN (SELECT id FROM caraway_messages"
            f"  WHERE queue IN ({marks}) AND visible_at <= ?"
            "  AND (lease_until IS NULL OR lease_until < ?)"
            "  ORDER BY priority DESC, id LIMIT ?)"
            " RETURNING id, queue, priority, redelivered, headers, properties, body,"
            " content_type, content_encoding",
            (self.owner, now + self.lease_seconds, *queues, now, now, limit),
        ).fetchall()
        rows.sort(key=lambda row: (-row[2], row[0]))
        return [
            published_with(Delivery(_message(row[4:9]), row[1], row[0], bool(row[3])))
            for row in rows
        ]

    def _where_mine(self, tags: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"id IN ({','.join('?' * len(tags))}) AND lease_owner = ?", [*tags, self.owner]

    def ack(self, tags: Sequence[Any]) -> None:
        if tags:
            where, params = self._where_mine(tags)
            self._conn().execute(f"DELETE FROM caraway_messages WHERE {where}", params)

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        if tags:
            where, params = self._where_mine(tags)
            self._conn().execute(
                "UPDATE caraway_messages SET lease_owner = NULL, lease_until = NULL,"
                f" visible_at = max(visible_at, ?) WHERE {where}",
                [self.clock.time() + delay, *params],
            )
            with _published:
                _published.notify_all()

    def renew(self, tags: Sequence[Any]) -> None:
        """Renew every lease this broker instance holds (``tags`` is informational)."""
        if not tags:
            return
        self._conn().execute(
            "UPDATE caraway_messages SET lease_until = ? WHERE lease_owner = ?",
            (self.clock.time() + self.lease_seconds, self.owner),
        )

    def reclaim_orphans(self) -> int:
        """Give back at once the leases of processes on this host that no longer exist."""
        conn = self._conn()
        owners = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT lease_owner FROM caraway_messages WHERE lease_owner IS NOT NULL"
            )
        ]
        dead = [owner for owner in owners if owner != self.owner and self._is_dead(owner)]
        if not dead:
            return 0
        cursor = conn.execute(
            "UPDATE caraway_messages SET lease_until = 0"
            f" WHERE lease_owner IN ({','.join('?' * len(dead))})",
            dead,
        )
        return int(cursor.rowcount)

    def _is_dead(self, owner: str) -> bool:
        host, _, rest = owner.partition(":")
        pid_text = rest.partition(":")[0]
        if host != self.hostname or not pid_text.isdigit():
            return False
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO caraway_dead_letters (queue, reason, failed_at, headers, properties,"
                " body, content_type, content_encoding)"
                " SELECT queue, ?, ?, headers, properties, body, content_type, content_encoding"
                " FROM caraway_messages WHERE id = ?",
                (reason, self.clock.time(), delivery.tag),
            )
            conn.execute("DELETE FROM caraway_messages WHERE id = ?", (delivery.tag,))
        return f"table {DEAD_LETTER_TABLE} in {self.db.path}"

    def purge(self, queue: str) -> int:
        cursor = self._conn().execute(
            "DELETE FROM caraway_messages WHERE queue = ?"
            " AND (lease_until IS NULL OR lease_until < ?)",
            (queue, self.clock.time()),
        )
        return int(cursor.rowcount)

    def size(self, queue: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT count(*) FROM caraway_messages WHERE queue = ?"
                " AND (lease_until IS NULL OR lease_until < ?)",
                (queue, self.clock.time()),
            )
            .fetchone()
        )
        return int(row[0])

    def queue_stats(self, queue: str) -> QueueStats:
        """Depth per priority and the oldest ready message's wait, in one read."""
        now = self.clock.time()
        rows = (
            self._conn()
            .execute(
                "SELECT priority, count(*), min(CASE WHEN visible_at <= ? THEN visible_at END)"
                " FROM caraway_messages WHERE queue = ?"
                " AND (lease_until IS NULL OR lease_until < ?) GROUP BY priority",
                (now, queue, now),
            )
            .fetchall()
        )
        by_priority = {int(priority): int(count) for priority, count, _ in rows}
        ready_since = [since for _, _, since in rows if since is not None]
        return QueueStats(
            sum(by_priority.values()), by_priority,
            oldest_age=now - min(ready_since) if ready_since else None,
            unknown={"consumers": "SQLite keeps no list of consumers: workers fetch by polling"},
        )  # fmt: skip

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = (
            self._conn()
            .execute(
                "SELECT queue, reason, failed_at, headers, properties, body, content_type,"
                " content_encoding, id FROM caraway_dead_letters ORDER BY id LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [DeadLetter(_message(r[3:8]), r[0], r[1], r[2], str(r[8])) for r in rows]

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        if not key.isdigit():
            return False
        self._conn()
        with self.db.write() as conn:
            if requeue:  # in the same transaction: never both, never neither
                conn.execute(
                    "INSERT INTO caraway_messages (queue, priority, visible_at, headers,"
                    " properties, body, content_type, content_encoding)"
                    " SELECT queue, 0, ?, headers, properties, body, content_type,"
                    " content_encoding FROM caraway_dead_letters WHERE id = ?",
                    (self.clock.time(), int(key)),
                )
            deleted = conn.execute("DELETE FROM caraway_dead_letters WHERE id = ?", (int(key),))
        if requeue and deleted.rowcount:
            with _published:
                _published.notify_all()
        return bool(deleted.rowcount)

    def close(self) -> None:
        if self._ready:
            with self.db.write() as conn:  # auto-delete queues go with their consumer
                gone = conn.execute(
                    "SELECT exchange, queue FROM caraway_bindings WHERE owner = ?", (self.owner,)
                ).fetchall()
                for exchange, queue in gone:
                    self._unbind(conn, exchange, queue)
        self.db.close_thread()

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        self._conn()  # the schema: a client's first act may be a revocation
        now = self.clock.time()
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO caraway_revoked (task_id, terminate, revoked_at) VALUES (?, ?, ?)",
                [(task_id, int(terminate), now) for task_id in task_ids],
            )

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, task_id, terminate FROM caraway_revoked WHERE id > ? ORDER BY id",
                (cursor,),
            )
            .fetchall()
        )
        if not rows:
            return [], cursor
        return [(row[1], bool(row[2])) for row in rows], int(rows[-1][0])

    def delayed(self, queues: Sequence[str], limit: int = 1000) -> list[tuple[float, Delivery]]:
        marks, now = ",".join("?" * len(queues)), self.clock.time()
        rows = (
            self._conn()
            .execute(
                "SELECT visible_at, queue, redelivered, headers, properties, body, content_type,"
                f" content_encoding FROM caraway_messages WHERE queue IN ({marks})"
                " AND visible_at > ? AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY visible_at, id LIMIT ?",
                (*queues, now, now, limit),
            )
            .fetchall()
        )
        return [(row[0], Delivery(_message(row[3:8]), row[1], None, bool(row[2]))) for row in rows]


def _message(columns: Sequence[Any]) -> Message:
    """A ``Message`` from the columns headers, properties, body, content_type, encoding."""
    headers, properties, body, content_type, content_encoding = columns
    return Message(
        serialization.json_loads(headers),
        serialization.json_loads(properties),
        bytes(body),
        content_type,
        content_encoding,
    )
