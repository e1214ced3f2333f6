"""The PostgreSQL database behind ``postgresql://``: connections, names and the schema.

One ``Database`` per broker: a *commands* connection shared by every thread (psycopg
serializes its use), in autocommit, each statement or ``transaction()`` block its own
transaction. Listeners (the fetching consumer, broadcast subscribers) open their own
connections, because waiting for notifications holds a connection.

Every connection runs with ``synchronous_commit = off``: a commit returns before its WAL
record is flushed, so a lease, an ack or a release costs no disk flush. A server crash may
lose the last such commits (never half of one): a message then is leased again or runs
again, the at-least-once promise holds. What must survive a crash commits with
``durable="on"`` (a message sent, a revocation), which flushes as usual; the
``synchronous_commit`` transport option may relax that for sends too (``"off"``: Redis'
default durability, a second or so of sends at risk in a server crash).

Tables live in the ``schema`` transport option when given (created if missing), else
wherever the connection's ``search_path`` puts them. Notifications use one channel for task
queues and one for broadcast, both named after the schema, so two schemas never wake each
other.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from caraway.exceptions import ImproperlyConfigured, OperationalError, Unreachable
from caraway.utils.pid import after_fork_in_child
from caraway.utils.text import mask_url

T = TypeVar("T")

#: A schema name we quote ourselves: statements are also run on the application's own
#: connection (transactional enqueue), whose driver may not be psycopg 3.
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT = 10
#: PostgreSQL's ``synchronous_commit`` levels, for the transport option of that name.
COMMIT_LEVELS = ("on", "off", "local", "remote_write", "remote_apply")
#: Serializes schema creation across processes (CREATE ... IF NOT EXISTS races otherwise).
_SCHEMA_LOCK_KEY = 0x43415241  # "CARA"

#: In a forked child: the parent's connections, kept so nothing closes them here (closing
#: would end the parent's session on the shared socket).
INHERITED: list[psycopg.Connection[Any]] = []


class Names:
    """Quoted table names and notification channels for one schema (or the search path)."""

    def __init__(self, schema: str | None) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ImproperlyConfigured(
                f"the schema transport option {schema!r} is not a plain identifier"
                " (letters, digits and _, at most 40)"
            )
        self.schema = schema
        self.channel = f"caraway_{schema or 'default'}"
        self.fanout_channel = f"{self.channel}_fanout"
        self.messages = self.table("caraway_messages")
        self.dead_letters = self.table("caraway_dead_letters")
        self.revoked = self.table("caraway_revoked")
        self.bindings = self.table("caraway_bindings")
        self.broadcast = self.table("caraway_broadcast")

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'


class Database:
    """The commands connection, made on first use and again after a failure."""

    def __init__(self, url: str, names: Names) -> None:
        self.url = url
        self.names = names
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._schemas: set[str] = set()
        after_fork_in_child(self._forget_parent)

    def describe(self) -> str:
        return mask_url(self.url)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new autocommit connection; ``Unreachable`` when the server cannot be reached."""
        try:
            # postgres:// and postgresql:// are both libpq's own spellings: passed as given.
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options="-c synchronous_commit=off",
                **kwargs,
            )
        except psycopg.Error as exc:
            raise Unreachable(f"cannot connect to {self.describe()}: {exc}") from exc

    def connection(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self.connect()
            return self._conn

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work(connection)``, psycopg's errors translated; a broken connection is
        dropped so the next call reconnects."""
        conn = self.connection()
        try:
            return work(conn)
        except psycopg.Error as exc:
            raise self.translate(exc, conn) from exc

    def translate(self, exc: psycopg.Error, conn: psycopg.Connection[Any]) -> OperationalError:
        if conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError):
            self.discard(conn)
            return Unreachable(f"lost the connection to {self.describe()}: {exc}")
        return OperationalError(f"{self.describe()} refused a statement: {exc}")

    def discard(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        with contextlib.suppress(psycopg.Error):  # already broken: nothing to close cleanly
            conn.close()

    @contextmanager
    def transaction(self, durable: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on the commands connection, errors translated; ``durable``: its
        commit waits as ``synchronous_commit`` says (``"on"``: for the disk)."""
        conn = self.connection()
        try:
            with conn.transaction():
                if durable is not None and durable != "off":
                    conn.execute(f"SET LOCAL synchronous_commit TO {durable}")
                yield conn
        except psycopg.Error as exc:
            raise self.translate(exc, conn) from exc

    def ensure_schema(self, name: str, statements: str) -> None:
        """Run ``statements`` (idempotent DDL) once per process, under an advisory lock."""
        if name in self._schemas:
            return
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            if self.names.schema:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.names.schema}"')
            for statement in filter(None, (s.strip() for s in statements.split(";"))):
                conn.execute(statement)
        self._schemas.add(name)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _forget_parent(self) -> None:
        if self._conn is not None:
            INHERITED.append(self._conn)
        self._conn = None
        self._lock = threading.Lock()
