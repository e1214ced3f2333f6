"""``postgresql://`` / ``postgres://``: task queues in a PostgreSQL table, sent in the
application's own transaction when it asks.

* Consumers take batches with ``FOR UPDATE SKIP LOCKED``: many workers share a queue, none
  waits on another's rows. A taken message is leased (owner, expiry), not deleted; live
  workers renew their leases, and a message whose lease ran out, or whose holder's
  connections are all gone (``kill -9``: ``reclaim_orphans`` asks ``pg_stat_activity``),
  is delivered again. Nothing is lost; a task may run twice.
* Every change that makes a message ready sends a ``NOTIFY``; idle consumers ``LISTEN`` and
  run no statement until woken, or until the next ETA or lease expiry they know of is due,
  or a slow ``heartbeat`` passes (a missed notification costs at most that much delay).
* ``publish_in(connection, batch)`` writes the messages and the ``NOTIFY`` through the
  caller's connection, in its open transaction (psycopg 3 or 2, a SQLAlchemy Connection or
  Session, Django's connection): workers see them only once it commits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from caraway import serialization
from caraway.engines.base.broker import Broker, BrokerCapabilities, DeadLetter, Delivery, Outgoing
from caraway.engines.base.fanout import Fanout
from caraway.engines.base.topology import QueueDeclaration, fan_out, published_with
from caraway.engines.postgresql.acks import BackgroundAcks
from caraway.engines.postgresql.database import COMMIT_LEVELS, Database, Names
from caraway.engines.postgresql.fanout import PostgreSQLFanout
from caraway.engines.postgresql.listener import Listener
from caraway.engines.postgresql.transaction import dbapi_cursor
from caraway.exceptions import ImproperlyConfigured, OperationalError
from caraway.protocol import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS {messages} (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    visible_at double precision NOT NULL,
    lease_owner text,
    lease_pid integer,
    lease_until double precision,
    redelivered boolean NOT NULL DEFAULT false,
    headers text NOT NULL,
    properties text NOT NULL,
    body bytea NOT NULL,
    content_type text NOT NULL,
    content_encoding text NOT NULL
);
CREATE INDEX IF NOT EXISTS caraway_messages_ready ON {messages} (queue, priority DESC, id);
CREATE INDEX IF NOT EXISTS caraway_messages_owner ON {messages} (lease_owner);
CREATE TABLE IF NOT EXISTS {dead_letters} (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    reason text NOT NULL,
    failed_at double precision NOT NULL,
    headers text NOT NULL,
    properties text NOT NULL,
    body bytea NOT NULL,
    content_type text NOT NULL,
    content_encoding text NOT NULL
);
CREATE TABLE IF NOT EXISTS {revoked} (
    id bigserial PRIMARY KEY,
    task_id text NOT NULL,
    terminate boolean NOT NULL DEFAULT false,
    revoked_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS {bindings} (
    exchange text NOT NULL,
    queue text NOT NULL,
    routing_key text NOT NULL,
    exchange_type text NOT NULL,
    owner text,
    owner_pid integer,
    PRIMARY KEY (exchange, queue)
)
"""
#: ``caraway_bindings.owner`` is set for auto-delete queues (a ``Broadcast`` queue): they go
#: with the broker that declared them, on close, or once its listening connection is gone.
#: Seconds a delivered message stays leased without renewal (``visibility_timeout``).
DEFAULT_LEASE = 60.0
#: Longest an idle consumer goes without a statement (``heartbeat`` transport option): the
#: bound on the delay a lost notification can cause, and how often orphans are looked for.
DEFAULT_HEARTBEAT = 30.0
#: Seconds since the consumer last waited on its listener during which it still counts as
#: listening: it fetches again within this unless its prefetch window is full.
LISTENER_FRESH = 1.0
#: Pause before looking again at a message another consumer was taking (its row locked).
RELOOK = 0.01
#: Longest ``close`` waits for the acks still on their way.
ACK_FLUSH_TIMEOUT = 5.0
#: Notification payloads on the queues' channel: a queue has something new, or a revocation.
QUEUE_PREFIX, REVOKED = "q:", "r"

_COLUMNS = "headers, properties, body, content_type, content_encoding"


class PostgreSQLBroker(Broker):
    capabilities = BrokerCapabilities(
        native_delay=True, leases=True, lease_seconds=DEFAULT_LEASE, reclaims_orphans=True,
        broadcast=True, transactional=True, exchanges=True,
    )  # fmt: skip

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.names = Names(self.options.get("schema"))
        self.db = Database(url, self.names)
        self.lease_seconds = float(self.options.get("visibility_timeout", DEFAULT_LEASE))
        self.heartbeat = float(self.options.get("heartbeat", DEFAULT_HEARTBEAT))
        self.commit_level = str(self.options.get("synchronous_commit", "on")).lower()
        if self.commit_level not in COMMIT_LEVELS:
            raise ImproperlyConfigured(
                f"the synchronous_commit transport option must be one of"
                f" {', '.join(COMMIT_LEVELS)}, got {self.commit_level!r}"
            )
        self.capabilities = replace(self.capabilities, lease_seconds=self.lease_seconds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._listener = Listener(self.db, [self.names.channel])
        self._fetching = threading.Lock()
        # What an idle consumer knows without asking: for these queues nothing is ready
        # before ``due`` (broker clock) unless notified, until ``recheck`` (monotonic).
        self._quiet: tuple[tuple[str, ...], float, float] | None = None
        # Revocation notifications seen by the listener (a count), and the count and time
        # of the last read: an idle worker's revocation polls then read nothing.
        self._revocation_news = 0
        self._revocations_read: tuple[int, float] | None = None
        self._waiting = False
        self._waited_at = -LISTENER_FRESH
        self._next_reclaim = 0.0
        self._transient: list[QueueDeclaration] = []  # auto-delete: they go on close
        self._acks = BackgroundAcks(self._delete)

    def describe(self) -> str:
        return self.db.describe()

    def fanout(self) -> Fanout:
        return PostgreSQLFanout(self)

    def _schema(self) -> None:
        names = self.names
        self.db.ensure_schema(
            "broker",
            SCHEMA.format(
                messages=names.messages,
                dead_letters=names.dead_letters,
                revoked=names.revoked,
                bindings=names.bindings,
            ),
        )

    def connect(self) -> None:
        self._schema()

    def declare(self, queue: str) -> None:
        self._schema()

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        self._schema()
        if declaration.auto_delete:
            with self._fetching:  # the listener's server process stands for this consumer
                self._listener.open()
            self._transient.append(declaration)
        with self.db.transaction() as conn:
            self._bind(conn, declaration)

    def _bind(self, conn: psycopg.Connection[Any], bound: QueueDeclaration) -> None:
        owned = bound.auto_delete
        conn.execute(
            f"INSERT INTO {self.names.bindings} (exchange, queue, routing_key, exchange_type,"
            " owner, owner_pid) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (exchange, queue)"
            " DO UPDATE SET routing_key = excluded.routing_key,"
            " exchange_type = excluded.exchange_type, owner = excluded.owner,"
            " owner_pid = excluded.owner_pid",
            (bound.exchange, bound.queue, bound.routing_key, bound.exchange_type,
             self.owner if owned else None, self._listener.backend_pid if owned else None),
        )  # fmt: skip

    def _routed(self, batch: Sequence[Outgoing]) -> list[Outgoing]:
        """The batch with each message sent to an exchange copied to its bound queues; the
        auto-delete queues of consumers that are gone are removed on the way."""
        if not any(item.exchange or item.declaration for item in batch):
            return list(batch)
        exchanges = list({item.exchange for item in batch if item.exchange})
        table = self.names.bindings
        with self.db.transaction() as conn:
            for bound in {item.declaration for item in batch if item.declaration is not None}:
                self._bind(conn, bound)
            gone = conn.execute(
                f"DELETE FROM {table} b WHERE exchange = ANY(%s) AND owner IS NOT NULL"
                " AND owner <> %s AND NOT EXISTS"
                " (SELECT 1 FROM pg_stat_activity a WHERE a.pid = b.owner_pid) RETURNING queue",
                (exchanges, self.owner),
            ).fetchall()
            if gone:
                conn.execute(f"DELETE FROM {self.names.messages} WHERE queue = ANY(%s)",
                             ([row[0] for row in gone],))  # fmt: skip
            rows = conn.execute(
                f"SELECT exchange, queue, routing_key, exchange_type FROM {table}"
                " WHERE exchange = ANY(%s)",
                (exchanges,),
            ).fetchall()
        found: dict[str, list[QueueDeclaration]] = {}
        for exchange, queue, key, kind in rows:
            found.setdefault(exchange, []).append(QueueDeclaration(queue, exchange, kind, key))
        return fan_out(batch, lambda exchange: found.get(exchange, ()))

    # --- publishing ----------------------------------------------------------------------

    def _insert(self) -> str:
        return (
            f"INSERT INTO {self.names.messages} (queue, priority, visible_at, {_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        )

    def _rows(self, batch: Sequence[Outgoing]) -> list[tuple[Any, ...]]:
        now = self.clock.time()
        return [
            (
                item.queue, item.priority, now if item.deliver_at is None else item.deliver_at,
                serialization.json_dumps(item.message.headers).decode(),
                serialization.json_dumps(item.message.properties).decode(),
                item.message.body, item.message.content_type, item.message.content_encoding,
            )
            for item in batch
        ]  # fmt: skip

    def _wakeups(self, queues: Sequence[str]) -> list[tuple[str, str]]:
        return [(self.names.channel, QUEUE_PREFIX + queue) for queue in dict.fromkeys(queues)]

    def publish(self, batch: Sequence[Outgoing]) -> None:
        self._schema()
        batch = self._routed(batch)
        if not batch:
            return
        with self.db.transaction(self.commit_level) as conn, conn.cursor() as cursor:
            cursor.executemany(self._insert(), self._rows(batch))
            cursor.executemany("SELECT pg_notify(%s, %s)", self._wakeups([i.queue for i in batch]))

    def publish_in(self, connection: Any, batch: Sequence[Outgoing]) -> None:
        """Write the batch through the application's ``connection``, in its transaction:
        consumers see the messages (and are woken) only if that transaction commits."""
        self._schema()  # on our own connection: DDL never runs in the caller's transaction
        batch = self._routed(batch)  # bindings are read outside it: workers declared them
        if not batch:
            return
        cursor = dbapi_cursor(connection)
        try:
            cursor.executemany(self._insert(), self._rows(batch))
            for channel, payload in self._wakeups([item.queue for item in batch]):
                cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        finally:
            cursor.close()

    # --- consuming -----------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout  # how long to wait is real time
        key = tuple(queues)
        with self._fetching:
            if self._listener.open():
                self._quiet = None  # notifications before now were not heard
                self._schema()
                self._rebind()
            while True:
                if self._must_look(key):
                    found = self._lease(queues, limit)
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if self._woken(key, self._pause(remaining)):
                    self._quiet = None

    def _rebind(self) -> None:
        """After the listener reconnected: this consumer's auto-delete queues, and the
        messages it holds, now name its new server process."""
        if self._transient:
            with self.db.transaction() as conn:
                for bound in self._transient:
                    self._bind(conn, bound)
        self._renew_all()

    def _must_look(self, key: tuple[str, ...]) -> bool:
        quiet = self._quiet
        return (
            quiet is None
            or quiet[0] != key
            or self.clock.time() >= quiet[1]
            or time.monotonic() >= quiet[2]
        )

    def _pause(self, remaining: float) -> float:
        assert self._quiet is not None
        _, due, recheck = self._quiet
        return max(min(remaining, due - self.clock.time(), recheck - time.monotonic()), 0.0)

    def _woken(self, key: tuple[str, ...], timeout: float) -> bool:
        """Wait up to ``timeout`` s; True when one of ``key``'s queues was notified."""
        self._waiting = True
        try:
            payloads = self._listener.wait(timeout)
        finally:
            self._waiting = False
            self._waited_at = time.monotonic()
        wanted = {QUEUE_PREFIX + queue for queue in key}
        if REVOKED in payloads:
            self._revocation_news += 1
        return any(payload in wanted for payload in payloads)

    def _lease(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Take up to ``limit`` ready messages; when none, learn when the next one may be."""
        now = self.clock.time()
        pid = self._listener.backend_pid
        table = self.names.messages

        def work(conn: psycopg.Connection[Any]) -> list[Delivery]:
            rows = conn.execute(
                f"UPDATE {table} SET lease_owner = %s, lease_pid = %s, lease_until = %s,"
                " redelivered = redelivered OR lease_until IS NOT NULL"
                f" WHERE id IN (SELECT id FROM {table}"
                "  WHERE queue = ANY(%s) AND visible_at <= %s"
                "  AND (lease_until IS NULL OR lease_until < %s)"
                "  ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" RETURNING id, queue, priority, redelivered, {_COLUMNS}",
                (self.owner, pid, now + self.lease_seconds, list(queues), now, now, limit),
            ).fetchall()
            if rows:
                return [
                    published_with(Delivery(_message(row[4:9]), row[1], row[0], bool(row[3])))
                    for row in sorted(rows, key=lambda row: (-row[2], row[0]))
                ]
            # Nothing ready: the next due ETA or lease expiry, so the wait ends then.
            (due,) = conn.execute(
                f"SELECT min(greatest(visible_at, coalesce(lease_until, 0))) FROM {table}"
                " WHERE queue = ANY(%s)",
                (list(queues),),
            ).fetchone() or (None,)
            recheck = time.monotonic() + self.heartbeat
            if due is not None and due <= now:  # ready but locked by another taker just now
                due, recheck = None, time.monotonic() + RELOOK
            self._quiet = (tuple(queues), float("inf") if due is None else float(due), recheck)
            return []

        return self._listener.run(work)

    def _mine(self) -> str:
        return "id = ANY(%s) AND lease_owner = %s"

    def ack(self, tags: Sequence[Any]) -> None:
        """Queued for the background thread (``acks.py``): returns at once."""
        if tags:
            self._acks.add(tags)

    def _delete(self, tags: list[Any]) -> None:
        self.db.run(
            lambda conn: conn.execute(
                f"DELETE FROM {self.names.messages} WHERE {self._mine()}", (tags, self.owner)
            )
        )

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        if not tags:
            return
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"UPDATE {self.names.messages} SET lease_owner = NULL, lease_pid = NULL,"
                " lease_until = NULL, visible_at = greatest(visible_at, %s)"
                f" WHERE {self._mine()} RETURNING queue",
                (self.clock.time() + delay, list(tags), self.owner),
            ).fetchall()
            self._notify(conn, [row[0] for row in rows])

    def _notify(self, conn: psycopg.Connection[Any], queues: Sequence[str]) -> None:
        if queues:
            with conn.cursor() as cursor:
                cursor.executemany("SELECT pg_notify(%s, %s)", self._wakeups(queues))

    def renew(self, tags: Sequence[Any]) -> None:
        """Renew every lease this broker holds (``tags`` is informational), naming the
        listener's server process as the holder's (it changes when it reconnects)."""
        if tags:
            self._renew_all()

    def _renew_all(self) -> None:
        self.db.run(
            lambda conn: conn.execute(
                f"UPDATE {self.names.messages} SET lease_until = %s,"
                " lease_pid = coalesce(%s, lease_pid) WHERE lease_owner = %s",
                (self.clock.time() + self.lease_seconds, self._listener.backend_pid, self.owner),
            )
        )

    def reclaim_orphans(self) -> int:
        """Give back at once the messages held by consumers whose connection is gone
        (killed, crashed): at most once per ``heartbeat``, so an idle worker stays quiet."""
        if time.monotonic() < self._next_reclaim:
            return 0
        self._next_reclaim = time.monotonic() + self.heartbeat
        self._schema()
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"UPDATE {self.names.messages} m SET lease_until = 0"
                " WHERE lease_until > 0 AND lease_owner <> %s AND NOT EXISTS"
                " (SELECT 1 FROM pg_stat_activity a WHERE a.pid = m.lease_pid)"
                " RETURNING queue",
                (self.owner,),
            ).fetchall()
            self._notify(conn, [row[0] for row in rows])
        return len(rows)

    # --- dead letters, purge, size ---------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        names = self.names
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO {names.dead_letters} (queue, reason, failed_at, {_COLUMNS})"
                f" SELECT queue, %s, %s, {_COLUMNS} FROM {names.messages} WHERE id = %s",
                (reason, self.clock.time(), delivery.tag),
            )
            conn.execute(f"DELETE FROM {names.messages} WHERE id = %s", (delivery.tag,))
        return f"table {names.dead_letters} in {self.describe()}"

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._schema()
        rows = self.db.run(
            lambda conn: conn.execute(
                f"SELECT queue, reason, failed_at, {_COLUMNS}, id FROM {self.names.dead_letters}"
                " ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
        )
        return [DeadLetter(_message(r[3:8]), r[0], r[1], r[2], str(r[8])) for r in rows]

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        if not key.isdigit():
            return False
        self._schema()
        names = self.names
        with self.db.transaction() as conn:  # one transaction: never both, never neither
            if requeue:
                queues = conn.execute(
                    f"INSERT INTO {names.messages} (queue, priority, visible_at, {_COLUMNS})"
                    f" SELECT queue, 0, %s, {_COLUMNS} FROM {names.dead_letters} WHERE id = %s"
                    " RETURNING queue",
                    (self.clock.time(), int(key)),
                ).fetchall()
                self._notify(conn, [row[0] for row in queues])
            deleted = conn.execute(
                f"DELETE FROM {names.dead_letters} WHERE id = %s", (int(key),)
            ).rowcount
        return bool(deleted)

    def purge(self, queue: str) -> int:
        self._schema()
        return int(
            self.db.run(
                lambda conn: (
                    conn.execute(
                        f"DELETE FROM {self.names.messages} WHERE queue = %s"
                        " AND (lease_until IS NULL OR lease_until < %s)",
                        (queue, self.clock.time()),
                    ).rowcount
                )
            )
        )

    def size(self, queue: str) -> int:
        self._schema()
        row = self.db.run(
            lambda conn: conn.execute(
                f"SELECT count(*) FROM {self.names.messages} WHERE queue = %s"
                " AND (lease_until IS NULL OR lease_until < %s)",
                (queue, self.clock.time()),
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def delayed(self, queues: Sequence[str], limit: int = 1000) -> list[tuple[float, Delivery]]:
        self._schema()
        now = self.clock.time()
        rows = self.db.run(
            lambda conn: conn.execute(
                f"SELECT visible_at, queue, redelivered, {_COLUMNS} FROM {self.names.messages}"
                " WHERE queue = ANY(%s) AND visible_at > %s"
                " AND (lease_until IS NULL OR lease_until < %s) ORDER BY visible_at, id LIMIT %s",
                (list(queues), now, now, limit),
            ).fetchall()
        )
        return [(row[0], Delivery(_message(row[3:8]), row[1], None, bool(row[2]))) for row in rows]

    # --- revocations ----------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        self._schema()
        now = self.clock.time()
        with self.db.transaction(self.commit_level) as conn, conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.names.revoked} (task_id, terminate, revoked_at)"
                " VALUES (%s, %s, %s)",
                [(task_id, terminate, now) for task_id in task_ids],
            )
            cursor.execute("SELECT pg_notify(%s, %s)", (self.names.channel, REVOKED))
        self._revocation_news += 1

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        news = self._revocation_news
        if self._nothing_revoked_since(news):
            return [], cursor
        self._schema()
        rows = self.db.run(
            lambda conn: conn.execute(
                f"SELECT id, task_id, terminate FROM {self.names.revoked} WHERE id > %s"
                " ORDER BY id",
                (cursor,),
            ).fetchall()
        )
        self._revocations_read = (news, time.monotonic())
        if not rows:
            return [], cursor
        return [(row[1], bool(row[2])) for row in rows], int(rows[-1][0])

    def _nothing_revoked_since(self, news: int) -> bool:
        """Whether the listener, waiting now or a moment ago (a consumer between two fetches),
        has heard of no revocation since the last read, younger than a heartbeat: the read
        would find nothing new. A busy consumer that stopped fetching reads every time."""
        last = self._revocations_read
        listening = self._waiting or time.monotonic() - self._waited_at < LISTENER_FRESH
        return (
            listening
            and last is not None
            and last[0] == news
            and time.monotonic() - last[1] < self.heartbeat
        )

    def close(self) -> None:
        self._acks.close(ACK_FLUSH_TIMEOUT)
        if self._transient:  # auto-delete queues go with their consumer, with their messages
            queues = [bound.queue for bound in self._transient]
            self._transient.clear()
            with contextlib.suppress(OperationalError), self.db.transaction() as conn:
                conn.execute(f"DELETE FROM {self.names.bindings} WHERE owner = %s", (self.owner,))
                conn.execute(f"DELETE FROM {self.names.messages} WHERE queue = ANY(%s)", (queues,))
        with self._fetching:
            self._listener.close()
        self.db.close()


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
