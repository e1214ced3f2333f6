"""``sqlite:///path``: results in the embedded SQLite file (the default with no backend set)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.backends.base import Backend, Stored
from caraway.embedded import Database, path_from_url

if TYPE_CHECKING:
    from caraway.app import Caraway

SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_results (
    key TEXT PRIMARY KEY,
    status TEXT,
    payload BLOB NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS caraway_results_expiry ON caraway_results (expires_at);
CREATE TABLE IF NOT EXISTS caraway_counters (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at REAL
)
"""


class SQLiteBackend(Backend):
    def __init__(self, app: Caraway, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        self.db = Database.open(path_from_url(url.removeprefix("db+")))
        self._ready = False

    def _conn(self) -> Any:
        if not self._ready:
            self.db.ensure_schema("results", SCHEMA)
            self._ready = True
        return self.db.connection()

    def describe(self) -> str:
        return f"sqlite:///{self.db.path}"  # SQLAlchemy form: 4 slashes for /abs/path

    def get_raw(self, key: str) -> Stored | None:
        row = (
            self._conn()
            .execute(
                "SELECT payload, content_type, content_encoding FROM caraway_results"
                " WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            )
            .fetchone()
        )
        return None if row is None else Stored(bytes(row[0]), row[1], row[2])

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        expires_at = None if ttl is None else time.time() + ttl
        # One statement: insert, or update unless a task result is already SUCCESS.
        guard = "WHERE caraway_results.status IS NOT ?" if state is not None else ""
        self._conn().execute(
            "INSERT INTO caraway_results (key, status, payload, content_type, content_encoding,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " status = excluded.status, payload = excluded.payload,"
            " content_type = excluded.content_type,"
            " content_encoding = excluded.content_encoding, expires_at = excluded.expires_at "
            + guard,
            (
                key,
                state,
                value.payload,
                value.content_type,
                value.content_encoding,
                expires_at,
                *((states.SUCCESS,) if state is not None else ()),
            ),
        )

    def delete_raw(self, key: str) -> None:
        conn = self._conn()
        conn.execute("DELETE FROM caraway_results WHERE key = ?", (key,))
        conn.execute("DELETE FROM caraway_counters WHERE key = ?", (key,))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        expires_at = None if ttl is None else time.time() + ttl
        row = (
            self._conn()
            .execute(
                "INSERT INTO caraway_counters (key, value, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value,"
                " expires_at = excluded.expires_at RETURNING value",
                (key, amount, expires_at),
            )
            .fetchone()
        )
        return int(row[0])

    def cleanup(self) -> int:
        conn, now = self._conn(), time.time()
        conn.execute(
            "DELETE FROM caraway_counters WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        cursor = conn.execute(
            "DELETE FROM caraway_results WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        return int(cursor.rowcount)

    def close(self) -> None:
        self.db.close_thread()
