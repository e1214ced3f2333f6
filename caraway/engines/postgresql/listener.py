"""A connection that LISTENs: how idle consumers and subscribers wait without polling.

PostgreSQL sends a notification to every listening session when a transaction that called
``pg_notify`` commits, so a message sent inside the application's transaction wakes nobody
before it commits, and nobody at all if it rolls back. Waiting runs no statement: an idle
listener costs the server nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from caraway.engines.postgresql.database import INHERITED, Database
from caraway.exceptions import Unreachable
from caraway.utils.pid import after_fork_in_child

T = TypeVar("T")


class Listener:
    """One connection listening on ``channels``; also runs the statements of its owner (the
    notifications that arrive meanwhile wait in psycopg's backlog). One thread at a time."""

    def __init__(self, db: Database, channels: Sequence[str]) -> None:
        self.db = db
        self.channels = list(channels)
        self._conn: psycopg.Connection[Any] | None = None
        after_fork_in_child(self._forget_parent)

    @property
    def backend_pid(self) -> int | None:
        """The server process of the connection, while it is open."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def open(self) -> bool:
        """Connect and LISTEN if not yet done; True when it just did (whatever was sent
        before may have been missed)."""
        if self._conn is not None and not self._conn.closed:
            return False
        conn = self.db.connect()
        try:
            for channel in self.channels:
                conn.execute(f'LISTEN "{channel}"')
        except psycopg.Error as exc:
            conn.close()
            raise Unreachable(f"cannot listen on {self.db.describe()}: {exc}") from exc
        self._conn = conn
        return True

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        self.open()
        conn = self._conn
        assert conn is not None
        try:
            return work(conn)
        except psycopg.Error as exc:
            self._drop()
            raise self.db.translate(exc, conn) from exc

    def wait(self, timeout: float) -> list[str]:
        """The payloads of the notifications that arrive within ``timeout`` s (those already
        received first); an empty list when none came."""
        self.open()
        conn = self._conn
        assert conn is not None
        try:
            payloads = [n.payload for n in conn.notifies(timeout=max(timeout, 0.0), stop_after=1)]
            if payloads:  # take the rest of a burst without waiting
                payloads += [n.payload for n in conn.notifies(timeout=0.0)]
        except psycopg.Error as exc:
            self._drop()
            what = f"lost the listening connection to {self.db.describe()}"
            raise Unreachable(f"{what}: {exc}") from exc
        return payloads

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # broken already
                conn.close()

    def close(self) -> None:
        self._drop()

    def _forget_parent(self) -> None:
        """In a forked child: let go of the parent's connection without closing it."""
        if self._conn is not None:
            INHERITED.append(self._conn)
        self._conn = None
