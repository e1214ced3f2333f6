"""``sqlite:///path``: results in the embedded SQLite file (the default with no backend set)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.engines.base.backend import Backend, BackendCapabilities, Stored
from caraway.engines.base.beat_store import BeatStore
from caraway.engines.sqlite.beat_store import SQLiteStore
from caraway.engines.sqlite.database import Database, path_from_url

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

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
# Chord joins: one row per header result, keyed by ``<task_id>:<index>`` so a redelivered
# task adds nothing; claims hold "claimed" or "done" until ``expires_at``.
CHORD_SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_chord_parts (
    group_id TEXT NOT NULL,
    member TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (group_id, member)
);
CREATE TABLE IF NOT EXISTS caraway_chord_claims (
    group_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at REAL NOT NULL
)
"""


class SQLiteBackend(Backend):
    capabilities = BackendCapabilities(
        chord_join="counting", beat_schedules=True, compressed_results=True
    )

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        self.db = Database.open(path_from_url(url.removeprefix("db+")))
        self._ready = False

    def beat_store(self) -> BeatStore:
        return SQLiteStore(self.db)

    def _conn(self) -> Any:
        if not self._ready:
            self.db.ensure_schema("results", SCHEMA)
            self.db.ensure_schema("chords", CHORD_SCHEMA)
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

    def read_counter(self, key: str) -> int | None:
        row = (
            self._conn()
            .execute(
                "SELECT value FROM caraway_counters WHERE key = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            )
            .fetchone()
        )
        return None if row is None else int(row[0])

    def chord_join(self, group_id: str, member: str, payload: bytes, ttl: float | None) -> int:
        now = time.time()
        expires_at = None if ttl is None else now + ttl
        self._conn()
        with self.db.write() as conn:
            done = conn.execute(
                "SELECT 1 FROM caraway_chord_claims WHERE group_id = ? AND state = 'done'"
                " AND expires_at > ?",
                (group_id, now),
            ).fetchone()
            if done:
                return -1
            added = conn.execute(
                "INSERT OR IGNORE INTO caraway_chord_parts (group_id, member, payload,"
                " expires_at) VALUES (?, ?, ?, ?)",
                (group_id, member, payload, expires_at),
            ).rowcount
            # A counter beside the rows: counting them would be O(n) per part.
            row = conn.execute(
                "INSERT INTO caraway_counters (key, value, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value,"
                " expires_at = excluded.expires_at RETURNING value",
                (f"chord-parts-{group_id}", added, expires_at),
            ).fetchone()
            return int(row[0])

    def chord_members(self, group_id: str) -> list[tuple[str, bytes]]:
        rows = (
            self._conn()
            .execute(
                "SELECT member, payload FROM caraway_chord_parts WHERE group_id = ?", (group_id,)
            )
            .fetchall()
        )
        return [(str(member), bytes(payload)) for member, payload in rows]

    def chord_claim(self, group_id: str, ttl: float) -> bool:
        now = time.time()
        self._conn()
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT state, expires_at FROM caraway_chord_claims WHERE group_id = ?",
                (group_id,),
            ).fetchone()
            if row is not None and (row[0] == "done" or row[1] > now):
                return False
            conn.execute(
                "INSERT OR REPLACE INTO caraway_chord_claims (group_id, state, expires_at)"
                " VALUES (?, 'claimed', ?)",
                (group_id, now + ttl),
            )
            return True

    def chord_finish(self, group_id: str, ttl: float) -> None:
        self._conn()
        with self.db.write() as conn:
            conn.execute("DELETE FROM caraway_chord_parts WHERE group_id = ?", (group_id,))
            conn.execute("DELETE FROM caraway_counters WHERE key = ?", (f"chord-parts-{group_id}",))
            conn.execute(
                "INSERT OR REPLACE INTO caraway_chord_claims (group_id, state, expires_at)"
                " VALUES (?, 'done', ?)",
                (group_id, time.time() + ttl),
            )

    def cleanup(self) -> int:
        conn, now = self._conn(), time.time()
        conn.execute(
            "DELETE FROM caraway_chord_parts WHERE expires_at IS NOT NULL AND expires_at <= ?",
            (now,),
        )
        conn.execute("DELETE FROM caraway_chord_claims WHERE expires_at <= ?", (now,))
        conn.execute(
            "DELETE FROM caraway_counters WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        cursor = conn.execute(
            "DELETE FROM caraway_results WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        return int(cursor.rowcount)

    def close(self) -> None:
        self.db.close_thread()
