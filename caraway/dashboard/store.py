"""The dashboard's own history: task events folded into one row per task, in a SQLite file.

The file is the dashboard's, not the broker's, so a restart shows the last hour again and
a busy dashboard never slows the queue. Writes come in batches from one ingest thread (one
transaction per batch: that is what makes 20,000 events/s possible); pages read with their
own connections (WAL: readers never wait for the writer). History is bounded by row count
and by age, pruned every few batches rather than on each insert.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caraway import states
from caraway.events.state import TASK_STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    uuid TEXT PRIMARY KEY,
    name TEXT, state TEXT NOT NULL, hostname TEXT, seen REAL NOT NULL, timestamp REAL NOT NULL,
    sent REAL, received REAL, started REAL, succeeded REAL, failed REAL, retried REAL,
    revoked REAL, rejected REAL,
    args TEXT, kwargs TEXT, result TEXT, exception TEXT, traceback TEXT, runtime REAL,
    retries INTEGER, root_id TEXT, parent_id TEXT, queue TEXT, exchange TEXT,
    routing_key TEXT, eta TEXT, expires TEXT, clock INTEGER, timeline TEXT NOT NULL,
    group_id TEXT, chord_body TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_time ON tasks (seen);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, seen);
CREATE INDEX IF NOT EXISTS tasks_by_name ON tasks (name, seen);
CREATE INDEX IF NOT EXISTS tasks_by_worker ON tasks (hostname, seen);
CREATE INDEX IF NOT EXISTS tasks_by_queue ON tasks (queue, seen);
CREATE INDEX IF NOT EXISTS tasks_by_parent ON tasks (parent_id);
CREATE INDEX IF NOT EXISTS tasks_by_root ON tasks (root_id);
-- Text search scans this (narrow) index instead of whole rows: see Store.tasks.
CREATE INDEX IF NOT EXISTS tasks_text ON tasks (seen, args, kwargs);
CREATE TABLE IF NOT EXISTS task_names (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS workers (
    hostname TEXT PRIMARY KEY, heartbeat REAL, offline_at REAL, info TEXT NOT NULL
);
"""
#: Columns added since the first release, with their type: an older file gets them on open.
#: ``group_id`` and ``chord_body`` (the task a chord header member's result goes to) come
#: from caraway's workers' events only.
ADDED_COLUMNS = (("group_id", "TEXT"), ("chord_body", "TEXT"))
#: Indexes on added columns, made once the columns are there. Most tasks are in no group
#: and no chord: partial indexes leave them out, so ingest pays for the few that are.
LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_by_group ON tasks (group_id) WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_chord ON tasks (chord_body) WHERE chord_body IS NOT NULL;
"""
# Speed: the indexes are keyed on ``seen`` (when the first event about the task came), which
# later events do not change, so only the state index moves as a task runs; and the timeline
# is a text column appended to in the same row, not a table of its own with an index on
# random task ids. That is what keeps ingest fast as the file grows past the page cache.

#: Task columns filled from the event field of the same name.
COPIED = (
    "name", "args", "kwargs", "result", "exception", "traceback", "runtime", "retries",
    "root_id", "parent_id", "queue", "exchange", "routing_key", "eta", "expires", "clock",
    "group_id", "chord_body",
)  # fmt: skip
#: Task columns stamped with the time of the event that names them (``task-started`` → started).
STAMPS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")
COLUMNS = ("uuid", "state", "hostname", "seen", "timestamp", *STAMPS, *COPIED, "timeline")
_READY = ", ".join(f"'{s}'" for s in sorted(states.READY_STATES))
#: A finished task stays finished when an older event about it arrives late (two workers,
#: batches); otherwise the newest event decides the state.
UPSERT = f"""
INSERT INTO tasks ({", ".join(COLUMNS)}) VALUES ({", ".join("?" * len(COLUMNS))})
ON CONFLICT (uuid) DO UPDATE SET
    state = CASE
        WHEN tasks.state IN ({_READY}) AND excluded.state NOT IN ({_READY}) THEN tasks.state
        WHEN excluded.timestamp >= tasks.timestamp OR excluded.state IN ({_READY})
            THEN excluded.state
        ELSE tasks.state END,
    seen = min(tasks.seen, excluded.seen),
    timestamp = max(tasks.timestamp, excluded.timestamp),
    hostname = coalesce(excluded.hostname, tasks.hostname),
    timeline = tasks.timeline || excluded.timeline,
    {", ".join(f"{c} = coalesce(excluded.{c}, tasks.{c})" for c in (*STAMPS, *COPIED))}
"""
#: What Flower's task list may be sorted by.
SORTABLE = frozenset({"name", "state", "received", "started"})
#: Seconds between two prunes (each is a DELETE over the oldest rows, not per insert).
PRUNE_SECONDS = 30.0


@dataclass(frozen=True)
class Limits:
    """How much history to keep: at most ``max_tasks`` tasks, none older than ``max_age`` s."""

    max_tasks: int = 250_000
    max_age: float = 24 * 3600.0


@dataclass(frozen=True)
class TaskFilter:
    """What the tasks page asks for; every field is optional."""

    state: str = ""
    name: str = ""
    worker: str = ""
    queue: str = ""
    since: float | None = None
    until: float | None = None
    search: str = ""
    limit: int = 100
    #: Flower's ``sort_by``: a column of ``SORTABLE``, ``-`` first for descending; newest
    #: first when empty.
    sort_by: str = ""

    def order(self) -> str:
        column = self.sort_by.lstrip("-")
        if not column:
            return "seen DESC"
        if column not in SORTABLE:
            raise ValueError(f"cannot sort by {column!r}: one of {', '.join(sorted(SORTABLE))}")
        return f"{column} {'DESC' if self.sort_by.startswith('-') else 'ASC'}, seen DESC"

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        for column, value in (("state", self.state), ("name", self.name),
                              ("hostname", self.worker), ("queue", self.queue)):  # fmt: skip
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        if self.since is not None:
            clauses.append("seen >= ?")
            values.append(self.since)
        if self.until is not None:
            clauses.append("seen <= ?")
            values.append(self.until)
        if self.search:
            # instr, not LIKE: a plain substring test, case-sensitive, and much cheaper
            clauses.append("(instr(args, ?) OR instr(kwargs, ?))")
            values += [self.search] * 2
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def _text(value: Any) -> str | None:
    """Event fields kept as text, as Flower shows them (``args`` is already a repr)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def fold(events: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per task for a batch of task events, the latest state last."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        kind = event["type"]
        stamp = float(event.get("timestamp") or time.time())
        row = rows.get(event["uuid"])
        if row is None:
            row = rows[event["uuid"]] = {"uuid": event["uuid"], "timestamp": 0.0, "state": None,
                                         "seen": stamp, "timeline": ""}  # fmt: skip
        new_state = TASK_STATES.get(kind)
        if new_state is not None and (
            row["state"] is None
            or (row["state"] not in states.READY_STATES and stamp >= row["timestamp"])
            or new_state in states.READY_STATES
        ):
            row["state"] = new_state
        row["timestamp"] = max(row["timestamp"], stamp)
        row["seen"] = min(row["seen"], stamp)
        row["timeline"] += f"{kind}\t{stamp!r}\t{event.get('hostname') or ''}\n"
        stamp_column = kind.removeprefix("task-")
        if stamp_column in STAMPS:
            row[stamp_column] = stamp
        if kind != "task-sent" and event.get("hostname"):
            row["hostname"] = event["hostname"]
        for column in COPIED:
            value = event.get(column)
            if value is not None:
                row[column] = value if column in ("runtime", "retries", "clock") else _text(value)
    return [
        tuple(row.get(c) if c != "state" else (row["state"] or states.PENDING) for c in COLUMNS)
        for row in rows.values()
    ]


class Store:
    """The history file; safe to use from any thread (one connection per thread)."""

    def __init__(self, path: str | Path, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self._local = threading.local()
        self._pruned_at = float("-inf")  # prune with the first batch: limits may have shrunk
        # The history holds tasks' arguments and results: its owner alone reads it (SQLite
        # gives the -wal and -shm files the same mode), as with the embedded broker's file.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = self._conn()
        conn.executescript(SCHEMA)  # its own transaction
        have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for column, kind in ADDED_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
        conn.executescript(LATE_INDEXES)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Task ids are random: their index pages are touched all over, so keep them in
            # memory (64 MB) rather than reading them back from disk on every batch.
            conn.execute("PRAGMA cache_size=-65536")
            # Fewer, larger checkpoints (each one syncs the file): ~40 MB of WAL between them.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- writing ----------------------------------------------------------------------------

    def add_task_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Store one batch of task events (each with ``uuid`` and ``type``) in one transaction."""
        if not events:
            return
        rows = fold(events)
        names = {(event["name"],) for event in events if isinstance(event.get("name"), str)}
        with self._write() as conn:
            conn.executemany(UPSERT, rows)
            # The filter's list of names, kept apart: a DISTINCT over every task is slow.
            conn.executemany("INSERT OR IGNORE INTO task_names (name) VALUES (?)", names)
        if time.monotonic() - self._pruned_at >= PRUNE_SECONDS:
            self.prune()

    def save_worker(self, hostname: str, info: dict[str, Any], heartbeat: float | None,
                    offline_at: float | None) -> None:  # fmt: skip
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (hostname, heartbeat, offline_at, info)"
                " VALUES (?, ?, ?, ?)",
                (hostname, heartbeat, offline_at, json.dumps(info, default=str)),
            )

    def prune(self, now: float | None = None) -> int:
        """Drop tasks past the limits, oldest first; returns how many."""
        self._pruned_at = time.monotonic()
        cutoff = (time.time() if now is None else now) - self.limits.max_age
        with self._write() as conn:
            dropped = conn.execute("DELETE FROM tasks WHERE seen < ?", (cutoff,)).rowcount
            excess = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
            excess -= self.limits.max_tasks
            if excess > 0:
                dropped += conn.execute(
                    "DELETE FROM tasks WHERE uuid IN"
                    " (SELECT uuid FROM tasks ORDER BY seen LIMIT ?)",
                    (excess,),
                ).rowcount
        return int(dropped)

    # --- reading ----------------------------------------------------------------------------

    def tasks(self, wanted: TaskFilter | None = None) -> list[dict[str, Any]]:
        """The newest tasks matching ``wanted``, newest first. A search for a task id finds
        that task by its key; any other text is looked for in the arguments."""
        wanted = wanted or TaskFilter()
        if wanted.search:
            found = self.task(wanted.search)
            if found is not None:
                return [found]
        where, values = wanted.where()
        # A text search reads the narrow (seen, args, kwargs) index rather than whole rows:
        # 3-4 times faster, and SQLite would not choose it by itself.
        source = "tasks INDEXED BY tasks_text" if wanted.search else "tasks"
        rows = self._conn().execute(
            f"SELECT * FROM {source}{where} ORDER BY {wanted.order()} LIMIT ?",
            [*values, wanted.limit],
        )
        return [dict(row) for row in rows]

    def task(self, task_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM tasks WHERE uuid = ?", (task_id,)).fetchone()
        return None if row is None else dict(row)

    def children(self, task_id: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT uuid FROM tasks WHERE parent_id = ? ORDER BY seen", (task_id,)
        )
        return [row[0] for row in rows]

    @staticmethod
    def _related(ids: Sequence[str], groups: Sequence[str]) -> tuple[str, list[str]]:
        marks = ", ".join("?" * len(ids))
        parts = [f"{column} IN ({marks})" for column in ("uuid", "root_id", "chord_body")]
        if groups:
            parts.append(f"group_id IN ({', '.join('?' * len(groups))})")
        return " OR ".join(parts), [*ids, *ids, *ids, *groups]

    def relatives(self, ids: Sequence[str], groups: Sequence[str], limit: int
                  ) -> list[dict[str, Any]]:  # fmt: skip
        """The tasks ``ids``, those under one of them (their root), joined into one (a
        chord's body) or in one of ``groups``, in the order they were first seen: ``uuid``,
        ``name``, ``state``, ``root_id``, ``parent_id``, ``group_id``, ``chord_body``. Each
        part of the test reads its own index."""
        where, values = self._related(ids, groups)
        rows = self._conn().execute(
            "SELECT uuid, name, state, root_id, parent_id, group_id, chord_body FROM tasks"
            f" WHERE {where} ORDER BY seen LIMIT ?",
            [*values, limit],
        )
        return [dict(row) for row in rows]

    def count_relatives(self, ids: Sequence[str], groups: Sequence[str]) -> int:
        """How many tasks ``relatives`` would give without a limit."""
        where, values = self._related(ids, groups)
        return int(self._conn().execute(f"SELECT count(*) FROM tasks WHERE {where}",
                                        values).fetchone()[0])  # fmt: skip

    def timeline(self, task_id: str) -> list[dict[str, Any]]:
        """The task's events in time order: ``type``, ``timestamp``, ``hostname``."""
        row = self._conn().execute("SELECT timeline FROM tasks WHERE uuid = ?", (task_id,))
        found = row.fetchone()
        entries = []
        for line in (found[0] if found else "").splitlines():
            kind, stamp, hostname = line.split("\t")
            entries.append({"type": kind, "timestamp": float(stamp), "hostname": hostname})
        return sorted(entries, key=lambda entry: entry["timestamp"])

    # Tasks that finished after ``since``. The time index bounds the scan: tasks first seen
    # over an hour before ``since`` are left out (one that ran longer is not counted).
    _FINISHED = (
        " FROM tasks WHERE seen >= ? - 3600 AND state IN ('SUCCESS', 'FAILURE')"
        " AND coalesce(succeeded, failed) >= ?"
    )

    def finished_counts(self, since: float, width: float) -> list[tuple[str, str, int, int]]:
        """``(name, state, slot, count)``: tasks finished after ``since`` by name, state and
        time slot (``width`` seconds each), counted by SQLite."""
        rows = self._conn().execute(
            "SELECT coalesce(name, '?'), state,"
            " CAST((coalesce(succeeded, failed) - ?) / ? AS INTEGER) AS slot, count(*)"
            + self._FINISHED
            + " GROUP BY 1, 2, 3",
            (since, width, since, since),
        )
        return [(row[0], row[1], int(row[2]), int(row[3])) for row in rows]

    def runtimes(self, since: float, limit: int) -> list[tuple[str, float]]:
        """``(name, runtime)`` of the newest ``limit`` successes after ``since``."""
        rows = self._conn().execute(
            "SELECT coalesce(name, '?'), runtime"
            + self._FINISHED
            + " AND state = 'SUCCESS' AND runtime IS NOT NULL ORDER BY seen DESC LIMIT ?",
            (since, since, limit),
        )
        return [(row[0], float(row[1])) for row in rows]

    def queue_rates(self, queue: str, since: float) -> tuple[int, int] | None:
        """``(sent, received)``: tasks of ``queue`` sent, and received by a worker, after
        ``since``; None when no task of that queue is known (a task's queue is known from its
        ``task-sent`` event). Tasks first seen over ten minutes before ``since`` are left out:
        the queue index bounds the scan."""
        conn = self._conn()
        if conn.execute("SELECT 1 FROM tasks WHERE queue = ? LIMIT 1", (queue,)).fetchone() is None:
            return None
        row = conn.execute(
            "SELECT count(CASE WHEN sent >= ? THEN 1 END),"
            " count(CASE WHEN received >= ? THEN 1 END)"
            " FROM tasks WHERE queue = ? AND seen >= ? - 600",
            (since, since, queue, since),
        ).fetchone()
        return int(row[0]), int(row[1])

    def sent_times(self, task_ids: Sequence[str]) -> list[float]:
        """When the tasks among ``task_ids`` whose ``task-sent`` event came were sent."""
        if not task_ids:
            return []
        marks = ", ".join("?" * len(task_ids))
        rows = self._conn().execute(
            f"SELECT sent FROM tasks WHERE sent IS NOT NULL AND uuid IN ({marks})", list(task_ids)
        )
        return [float(row[0]) for row in rows]

    def task_names(self) -> list[str]:
        rows = self._conn().execute("SELECT name FROM task_names ORDER BY name")
        return [row[0] for row in rows]

    def workers(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM workers ORDER BY hostname")
        return [{**dict(row), "info": json.loads(row["info"])} for row in rows]

    def count(self) -> int:
        """Tasks kept now (the history's size)."""
        return int(self._conn().execute("SELECT count(*) FROM tasks").fetchone()[0])
