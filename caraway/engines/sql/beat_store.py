"""The database scheduler on the SQL result backend (PostgreSQL, MySQL/MariaDB, SQLite via
SQLAlchemy): the lease is a row, locked (``SELECT ... FOR UPDATE``) by every write that
checks it, so a run is recorded only by the holder of an unexpired lease.

Lease expiry compares this machine's clock with the time written by the previous holder:
keep the beats' clocks in sync (NTP) to within a fraction of ``beat_lease_timeout``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.sql.models import create_tables
from caraway.exceptions import OperationalError

if TYPE_CHECKING:
    from caraway.engines.sql.backend import SQLBackend

T = TypeVar("T")
LEASE_NAME = "beat"


class Tables:
    """The four tables, named ``<prefix>_lease``, ``_state``, ``_entries`` and ``_version``.

    Timestamps are doubles: MySQL's FLOAT has 4 bytes, steps of 128 s at today's epoch.
    """

    def __init__(self, prefix: str = "caraway_beat") -> None:
        self.metadata = sa.MetaData()
        self.lease = sa.Table(
            f"{prefix}_lease",
            self.metadata,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
        )
        self.state = sa.Table(
            f"{prefix}_state",
            self.metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("last_run_at", sa.Double, nullable=False),
            sa.Column("total_run_count", sa.Integer, nullable=False, default=0),
        )
        self.entries = sa.Table(
            f"{prefix}_entries",
            self.metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("definition", sa.Text, nullable=False),
        )
        self.version = sa.Table(
            f"{prefix}_version",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("value", sa.Integer, nullable=False),
        )


class SQLStore(BeatStore):
    def __init__(self, backend: SQLBackend, table_prefix: str = "caraway_beat") -> None:
        self.backend = backend
        self.tables = Tables(table_prefix)
        self._ready = False

    def describe(self) -> str:
        return self.backend.describe()

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        if not self._ready:
            engine = self.backend.engine
            with self.backend._translated():
                create_tables(self.tables.metadata, engine)
            self._ready = True
        return self.backend._run(work)

    # --- the lease --------------------------------------------------------------------------

    def acquire(self, owner: str, ttl: float) -> bool:
        t = self.tables

        def work(conn: sa.Connection) -> bool:
            now = time.time()
            row = conn.execute(_locked_lease(t)).first()
            if row is None:
                conn.execute(t.lease.insert().values(name=LEASE_NAME, owner=owner,
                                                         expires_at=now + ttl))  # fmt: skip
                return True
            if row.owner != owner and row.expires_at > now:
                return False
            conn.execute(
                t.lease.update()
                .where(t.lease.c.name == LEASE_NAME)
                .values(owner=owner, expires_at=now + ttl)
            )
            return True

        try:
            return self._run(work)
        except OperationalError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                return False  # another beat inserted the first lease row at the same moment
            raise

    def release(self, owner: str) -> None:
        t = self.tables
        self._run(
            lambda conn: conn.execute(
                t.lease.delete().where(t.lease.c.name == LEASE_NAME, t.lease.c.owner == owner)
            )
        )

    def still_held(self, owner: str) -> bool:
        return self._run(lambda conn: _holds(conn, self.tables, owner))

    # --- run states -------------------------------------------------------------------------

    def states(self) -> dict[str, EntryState]:
        t = self.tables
        rows = self._run(lambda conn: conn.execute(sa.select(t.state)).all())
        return {row.name: EntryState(row.last_run_at, row.total_run_count) for row in rows}

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        t = self.tables

        def work(conn: sa.Connection) -> bool:
            if not _holds(conn, t, owner):  # the lease row stays locked until we commit
                return False
            names = list(states)
            conn.execute(t.state.delete().where(t.state.c.name.in_(names)))
            conn.execute(
                t.state.insert(),
                [
                    {"name": n, "last_run_at": s.last_run_at, "total_run_count": s.total_run_count}
                    for n, s in states.items()
                ],
            )
            return True

        return self._run(work) if states else self.still_held(owner)

    def forget_state(self, name: str) -> None:
        t = self.tables
        self._run(lambda conn: conn.execute(t.state.delete().where(t.state.c.name == name)))

    # --- definitions ----------------------------------------------------------------------

    def definitions(self) -> dict[str, dict[str, Any]]:
        t = self.tables
        rows = self._run(lambda conn: conn.execute(sa.select(t.entries)).all())
        return {row.name: json.loads(row.definition) for row in rows}

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        text = json.dumps(dict(definition))
        t = self.tables

        def work(conn: sa.Connection) -> None:
            conn.execute(t.entries.delete().where(t.entries.c.name == name))
            conn.execute(t.entries.insert().values(name=name, definition=text))
            _bump(conn, t)

        self._run(work)

    def delete_definition(self, name: str) -> bool:
        t = self.tables

        def work(conn: sa.Connection) -> bool:
            found = conn.execute(t.entries.delete().where(t.entries.c.name == name))
            conn.execute(t.state.delete().where(t.state.c.name == name))
            _bump(conn, t)
            return bool(found.rowcount)

        return self._run(work)

    def version(self) -> int:
        t = self.tables
        value = self._run(lambda conn: conn.execute(sa.select(t.version.c.value)).scalar())
        return int(value or 0)


def _locked_lease(t: Tables) -> sa.Select[Any]:
    return (
        sa.select(t.lease.c.owner, t.lease.c.expires_at)
        .where(t.lease.c.name == LEASE_NAME)
        .with_for_update()
    )


def _holds(conn: sa.Connection, t: Tables, owner: str) -> bool:
    row = conn.execute(_locked_lease(t)).first()
    return row is not None and row.owner == owner and row.expires_at > time.time()


def _bump(conn: sa.Connection, t: Tables) -> None:
    updated = conn.execute(t.version.update().values(value=t.version.c.value + 1))
    if not updated.rowcount:
        conn.execute(t.version.insert().values(id=1, value=1))
