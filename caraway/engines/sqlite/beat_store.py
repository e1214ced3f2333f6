"""The database scheduler on the embedded SQLite file: tables beside the results, the lease a
lock on ``<file>.beat-lock`` (every beat sharing the file runs on this machine). When the
broker is the same file, a run's message and its record are written in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.sqlite.database import Database
from caraway.utils.filelock import FileLease

if TYPE_CHECKING:
    from caraway.engines.base.broker import Broker, Outgoing

SCHEMA = """
CREATE TABLE IF NOT EXISTS caraway_beat_state (
    name TEXT PRIMARY KEY,
    last_run_at REAL NOT NULL,
    total_run_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS caraway_beat_entries (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS caraway_beat_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
)
"""


class SQLiteStore(BeatStore):
    holds_while_alive = True

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lease = FileLease(Path(str(db.path) + ".beat-lock"))
        self._ready = False
        self._broker_ready = False

    def describe(self) -> str:
        return f"sqlite:///{self.db.path}"

    def _conn(self) -> sqlite3.Connection:
        if not self._ready:
            self.db.ensure_schema("beat", SCHEMA)
            self._ready = True
        return self.db.connection()

    def acquire(self, owner: str, ttl: float) -> bool:
        return self.lease.acquire()

    def release(self, owner: str) -> None:
        self.lease.release()

    def still_held(self, owner: str) -> bool:
        return self.lease.held

    def states(self) -> dict[str, EntryState]:
        rows = self._conn().execute(
            "SELECT name, last_run_at, total_run_count FROM caraway_beat_state"
        )
        return {name: EntryState(float(last), int(count)) for name, last, count in rows}

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        if not self.lease.held:
            return False
        self._conn()
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO caraway_beat_state (name, last_run_at, total_run_count)"
                " VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " last_run_at = excluded.last_run_at,"
                " total_run_count = excluded.total_run_count",
                [(n, s.last_run_at, s.total_run_count) for n, s in states.items()],
            )
        return True

    def send(
        self, owner: str, name: str, state: EntryState, batch: Sequence[Outgoing], broker: Broker
    ) -> bool:
        """On the embedded broker's own file, the message and the record share one commit."""
        if getattr(broker, "db", None) is not self.db:
            return super().send(owner, name, state, batch, broker)
        if not self.lease.held:
            return False
        self._conn()
        if not self._broker_ready:  # its tables, created outside our transaction
            broker.size(batch[0].queue if batch else "celery")
            self._broker_ready = True
        with self.db.write():
            broker.publish(batch)
            self.save_states(owner, {name: state})
        return True

    def forget_state(self, name: str) -> None:
        self._conn().execute("DELETE FROM caraway_beat_state WHERE name = ?", (name,))

    def definitions(self) -> dict[str, dict[str, Any]]:
        rows = self._conn().execute("SELECT name, definition FROM caraway_beat_entries")
        return {name: json.loads(text) for name, text in rows}

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        self._conn()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO caraway_beat_entries (name, definition) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET definition = excluded.definition",
                (name, json.dumps(dict(definition))),
            )
            self._bump(conn)

    def delete_definition(self, name: str) -> bool:
        self._conn()
        with self.db.write() as conn:
            found = conn.execute("DELETE FROM caraway_beat_entries WHERE name = ?", (name,))
            conn.execute("DELETE FROM caraway_beat_state WHERE name = ?", (name,))
            self._bump(conn)
        return bool(found.rowcount)

    def _bump(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO caraway_beat_version (id, value) VALUES (1, 1)"
            " ON CONFLICT(id) DO UPDATE SET value = value + 1"
        )

    def version(self) -> int:
        row = self._conn().execute("SELECT value FROM caraway_beat_version").fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        self.lease.release()
