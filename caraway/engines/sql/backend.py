"""``db+postgresql://``, ``db+mysql://``, ``db+sqlite:///``: results in Celery's SQL tables.

Unlike the key-value engines this one does not store an opaque payload: a task is a row of
``celery_taskmeta`` and a group a row of ``celery_tasksetmeta``, written and read exactly as
Celery's SQLAlchemy backend does, so Celery clients and caraway share one results database.
Chord counters live in a small table of our own, ``caraway_chord_counters``.

* ``db+postgresql://`` without a driver uses psycopg 3 (the ``postgresql`` extra), not
  SQLAlchemy's default psycopg2; ``db+mysql://`` and ``db+mariadb://`` use PyMySQL.
* One Engine per URL and options, ``pool_pre_ping`` on so a restarted server is reconnected
  to; each operation runs in its own short transaction. A forked child (prefork) starts with
  empty pools: it never writes on a connection its parent opened.
* SQLAlchemy errors leave as one :class:`caraway.exceptions.OperationalError` naming the
  masked URL and the cause (the SQLAlchemy error, its own chain and stack dropped).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.pool import NullPool

from caraway import serialization, states
from caraway.engines.base.backend import (
    GROUP_KEY_PREFIX,
    TASK_KEY_PREFIX,
    Backend,
    BackendCapabilities,
    Stored,
)
from caraway.engines.base.beat_store import BeatStore
from caraway.engines.base.exception_meta import exception_to_meta
from caraway.engines.sql.beat_store import SQLStore
from caraway.engines.sql.models import (
    EXTENDED_COLUMNS,
    Encoded,
    GroupTuple,
    build_parts_table,
    build_tables,
    create_tables,
)
from caraway.exceptions import ImproperlyConfigured, MissingExtra, OperationalError, Unreachable
from caraway.utils.pid import after_fork_in_child
from caraway.utils.text import mask_url, truncate

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

T = TypeVar("T")

#: Driver used when the URL names none, and the extra that installs it.
DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_DRIVER_EXTRAS = {
    "psycopg": ("psycopg", "postgresql"),
    "pymysql": ("pymysql", "mysql"),
}
#: Deadlock / serialization failures: the transaction was rolled back, running it again is safe.
_RETRY_CODES = {"40001", "40P01", "1213", "1205"}
_ATTEMPTS = 3
#: Task ids per ``IN (...)`` query (SQLite allows 999 variables before 3.32).
IN_CHUNK = 500

_engines: dict[tuple[Any, ...], sa.Engine] = {}
_created: set[tuple[Any, ...]] = set()


class _Engines:
    lock = threading.Lock()
    #: In a forked child: the parent's pools, kept so that nothing closes their connections
    #: here (a driver's close on an inherited socket would end the parent's session).
    inherited: ClassVar[list[sa.Pool]] = []


def _forget_parent_connections() -> None:
    """In a forked child: each engine gets an empty pool, the parent's connections stay open
    for the parent (SQLAlchemy's ``dispose(close=False)`` recipe for multiprocessing)."""
    _Engines.lock = threading.Lock()
    for engine in _engines.values():
        _Engines.inherited.append(engine.pool)
        engine.dispose(close=False)


after_fork_in_child(_forget_parent_connections)


def sqlalchemy_url(url: str) -> str:
    """``db+mysql://u@h/db`` -> ``mysql+pymysql://u@h/db``: drop ``db+``, name a driver."""
    rest = url[3:] if url[:3].lower() == "db+" else url
    scheme, sep, tail = rest.partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    driver = driver or DEFAULT_DRIVERS.get(dialect, "")
    return f"{dialect}+{driver}{sep}{tail}" if driver else f"{dialect}{sep}{tail}"


def _utcnow() -> datetime:
    # Celery's DateTime columns are naive: we write UTC, and read naive values as UTC.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _to_column_date(value: Any) -> datetime | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def _from_column_date(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text when the column was not typed
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return str(value.astimezone(timezone.utc).isoformat())


def row_from_meta(
    meta: Mapping[str, Any], encode: Callable[[Any], bytes], extended: bool
) -> dict[str, Any]:
    """Column values for a task row, as Celery's backend writes them.

    ``result`` is the raw value (exceptions already in their wire dict), ``date_done`` is
    set only for ready states; ``children``, ``group_id`` and ``parent_id`` have no column
    in Celery's table and are not stored. With ``result_extended`` every extended column is
    written, None where the meta has no value; ``args``/``kwargs`` are encoded with the
    result serializer.
    """
    row: dict[str, Any] = {
        "status": meta["status"],
        "result": meta.get("result"),
        "traceback": meta.get("traceback"),
        "date_done": _to_column_date(meta.get("date_done")),
    }
    if extended:
        for column in EXTENDED_COLUMNS:
            value = meta.get(column)
            if column in {"args", "kwargs"} and value is not None:
                value = encode(value)
            row[column] = value
    return row


def meta_from_row(
    task_id: str, row: Mapping[Any, Any], decode: Callable[[bytes], Any], extended: bool
) -> dict[str, Any]:
    """The meta dict for a task row, whoever wrote it (Celery or caraway)."""
    result = row["result"]
    if isinstance(result, Encoded):  # Celery 5.7 encodes with the result serializer
        result = decode(result.data)
    if isinstance(result, BaseException):  # written by Celery with the pickle serializer
        result = exception_to_meta(result)
    meta: dict[str, Any] = {
        "status": row["status"],
        "result": result,
        "traceback": row["traceback"],
        "children": [],
        "date_done": _from_column_date(row["date_done"]),
    }
    if extended:
        for column in EXTENDED_COLUMNS:
            value = row.get(column)
            if column in {"args", "kwargs"} and value is not None:
                value = decode(bytes(value))
            meta[column] = value
    meta["task_id"] = task_id
    return meta


class SQLBackend(Backend):
    capabilities = BackendCapabilities(chord_join="counting", beat_schedules=True)

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        conf = app.conf
        self.sa_url = sqlalchemy_url(url)
        _require_driver(url, self.sa_url)
        self.engine_options = dict(conf.database_engine_options or {})
        self.short_lived = bool(conf.database_short_lived_sessions)
        self.metadata, self.tasks, self.groups, self.counters = build_tables(
            dict(conf.database_table_names or {}),
            dict(conf.database_table_schemas or {}),
            self.extended,
            trusted=self.serializer == "pickle",
        )
        self.parts = build_parts_table(
            self.metadata, dict(conf.database_table_schemas or {}).get("task")
        )
        self._field_type, self._field_encoding, _ = serialization.dumps([], self.serializer)
        self._engine: sa.Engine | None = None
        if conf.database_create_tables_at_setup:
            self.engine  # noqa: B018 - connects and creates the tables now, as Celery 5.5+ does

    # --- engine and errors --------------------------------------------------------------

    def beat_store(self) -> BeatStore:
        return SQLStore(self)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._shared_engine()
            self._create_tables(self._engine)
        return self._engine

    def _shared_engine(self) -> sa.Engine:
        options = dict(self.engine_options)
        options.setdefault("pool_pre_ping", True)
        if self.short_lived:  # a fresh connection per operation: nothing left to go stale
            options["poolclass"] = NullPool
        key = (self.sa_url, repr(sorted(options.items(), key=str)))
        with _Engines.lock:
            engine = _engines.get(key)
            if engine is None:
                with self._translated():
                    engine = sa.create_engine(self.sa_url, **options)
                _engines[key] = engine
            return engine

    def _create_tables(self, engine: sa.Engine) -> None:
        key = (id(engine), *(str(table) for table in self.metadata.sorted_tables))
        if key in _created:
            return
        with self._translated():
            create_tables(self.metadata, engine)
        _created.add(key)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            detail = truncate(mask_url(str(getattr(exc, "orig", None) or exc)).strip(), 500)
            # The DBAPI's OperationalError: the server is away, restarting, or refusing us.
            away = isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
            raise (Unreachable if away else OperationalError)(
                f"SQL result backend {self.describe()}: {type(exc).__name__}: {detail}"
            ) from _alone(exc)

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        """``work`` in one transaction; deadlocks and dropped connections are tried again."""
        with self._translated():
            for attempt in range(_ATTEMPTS):
                try:
                    with self.engine.begin() as conn:
                        return work(conn)
                except sa.exc.DBAPIError as exc:
                    if attempt + 1 >= _ATTEMPTS or not _retryable(exc):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, statement: sa.Insert) -> bool:
        """Run an INSERT; False when the row already exists (unique key taken)."""
        try:
            self._run(lambda conn: conn.execute(statement))
        except OperationalError as exc:
            if isinstance(exc.__cause__, sa.exc.IntegrityError):
                return False
            raise
        return True

    def describe(self) -> str:
        return mask_url(self.url)

    # --- Celery's rows ------------------------------------------------------------------

    def _encode_field(self, value: Any) -> bytes:
        return serialization.dumps(value, self.serializer)[2]

    def _decode_field(self, value: bytes) -> Any:
        return serialization.loads(value, self._field_type, self._field_encoding, self.accept)

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None,
        request: Any,
    ) -> dict[str, Any]:
        meta = self.build_meta(task_id, result, state, traceback, request)
        values = row_from_meta(meta, self._encode_field, self.extended)
        tasks = self.tasks
        # Never overwrite SUCCESS: the guard is in the UPDATE itself, so it holds across
        # workers. A missing row is inserted; losing that race means the row now exists.
        guarded = (
            tasks.update()
            .where(tasks.c.task_id == task_id)
            .where(sa.or_(tasks.c.status.is_(None), tasks.c.status != states.SUCCESS))
            .values(**values)
        )
        if self._run(lambda conn: conn.execute(guarded).rowcount):
            return meta
        if not self._insert(tasks.insert().values(task_id=task_id, **values)):
            self._run(lambda conn: conn.execute(guarded))
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        return self.get_many_task_meta([task_id])[0]

    def get_many_task_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One ``SELECT ... WHERE task_id IN (...)`` per ``IN_CHUNK`` tasks."""
        tasks = self.tasks

        def read(chunk: Sequence[str]) -> Callable[[Any], Sequence[Any]]:
            query = sa.select(tasks).where(tasks.c.task_id.in_(chunk))
            return lambda conn: conn.execute(query).mappings().all()

        rows: dict[str, Any] = {}
        for start in range(0, len(task_ids), IN_CHUNK):
            found = self._run(read(task_ids[start : start + IN_CHUNK]))
            rows.update((row["task_id"], row) for row in found)
        return [
            self.meta_of(task_id, None)
            if task_id not in rows
            else meta_from_row(task_id, rows[task_id], self._decode_field, self.extended)
            for task_id in task_ids
        ]

    def forget(self, task_id: str) -> None:
        statement = self.tasks.delete().where(self.tasks.c.task_id == task_id)
        self._run(lambda conn: conn.execute(statement))

    def save_group(self, group_id: str, result: Any) -> Any:
        groups = self.groups
        values = {"result": GroupTuple(result), "date_done": _utcnow()}
        if not self._insert(groups.insert().values(taskset_id=group_id, **values)):
            update = groups.update().where(groups.c.taskset_id == group_id).values(**values)
            self._run(lambda conn: conn.execute(update))
        return result

    def restore_group(self, group_id: str) -> Any:
        query = sa.select(self.groups.c.result).where(self.groups.c.taskset_id == group_id)
        return self._run(lambda conn: conn.execute(query).scalar())

    def delete_group(self, group_id: str) -> None:
        statement = self.groups.delete().where(self.groups.c.taskset_id == group_id)
        self._run(lambda conn: conn.execute(statement))

    def cleanup(self) -> int:
        """Delete rows whose ``date_done`` is older than ``result_expires`` (as Celery does)."""
        now = _utcnow()
        expires = self.expires

        def work(conn: sa.Connection) -> int:
            conn.execute(self.counters.delete().where(self.counters.c.expires_at < now))
            conn.execute(self.parts.delete().where(self.parts.c.expires_at < now))
            if expires is None:
                return 0
            cutoff = now - timedelta(seconds=expires)
            deleted = conn.execute(self.tasks.delete().where(self.tasks.c.date_done < cutoff))
            conn.execute(self.groups.delete().where(self.groups.c.date_done < cutoff))
            return int(deleted.rowcount)

        return self._run(work)

    # --- engine primitives --------------------------------------------------------------

    def get_raw(self, key: str) -> Stored | None:
        raise NotImplementedError(
            "the SQL result backend keeps Celery's columns, not encoded payloads:"
            " use get_task_meta()/restore_group()"
        )

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        raise NotImplementedError(
            "the SQL result backend keeps Celery's columns, not encoded payloads:"
            " use store_result()/save_group()"
        )

    def delete_raw(self, key: str) -> None:
        if key.startswith(TASK_KEY_PREFIX):
            self.forget(key.removeprefix(TASK_KEY_PREFIX))
        elif key.startswith(GROUP_KEY_PREFIX):
            self.delete_group(key.removeprefix(GROUP_KEY_PREFIX))
        statement = self.counters.delete().where(self.counters.c.key == key)
        self._run(lambda conn: conn.execute(statement))

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        expires_at = None if ttl is None else _utcnow() + timedelta(seconds=ttl)
        return self._run(lambda conn: _increment(conn, self.counters, key, amount, expires_at))

    def read_counter(self, key: str) -> int | None:
        query = sa.select(self.counters.c.value).where(self.counters.c.key == key)
        value = self._run(lambda conn: conn.execute(query).scalar())
        return None if value is None else int(value)

    # --- chord joins ------------------------------------------------------------------
    # Parts are rows keyed by member; the count is a counter row updated in the same
    # transaction, whose row lock orders concurrent parts (counting rows could miss a
    # part another transaction has not committed yet). Claims are counter rows too:
    # 1 while held (until expires_at), -1 once the chord is finished.

    def chord_join(self, group_id: str, member: str, payload: bytes, ttl: float | None) -> int:
        now = _utcnow()
        expires_at = None if ttl is None else now + timedelta(seconds=ttl)
        claims, parts = self.counters.c, self.parts

        def work(conn: sa.Connection) -> int:
            done = sa.select(claims.value).where(
                claims.key == _claim_key(group_id), claims.value == -1, claims.expires_at > now
            )
            if conn.execute(done).first() is not None:
                return -1
            added = _insert_ignoring_duplicates(
                conn, parts, {"group_id": group_id, "member": member, "payload": payload,
                              "expires_at": expires_at},
            )  # fmt: skip
            return _increment(conn, self.counters, _parts_key(group_id), int(added), expires_at)

        return self._run(work)

    def chord_members(self, group_id: str) -> list[tuple[str, bytes]]:
        parts = self.parts
        query = sa.select(parts.c.member, parts.c.payload).where(parts.c.group_id == group_id)
        rows = self._run(lambda conn: conn.execute(query).all())
        return [(str(member), bytes(payload)) for member, payload in rows]

    def chord_claim(self, group_id: str, ttl: float) -> bool:
        now = _utcnow()
        until = now + timedelta(seconds=ttl)
        key, table = _claim_key(group_id), self.counters
        if self._insert(table.insert().values(key=key, value=1, expires_at=until)):
            return True
        # Held or finished: take it over only from a holder that let it expire (a crash).
        take_over = (
            table.update()
            .where(table.c.key == key, table.c.value == 1, table.c.expires_at < now)
            .values(expires_at=until)
        )
        return bool(self._run(lambda conn: conn.execute(take_over).rowcount))

    def chord_finish(self, group_id: str, ttl: float) -> None:
        until = _utcnow() + timedelta(seconds=ttl)
        table, key = self.counters, _claim_key(group_id)

        def work(conn: sa.Connection) -> None:
            conn.execute(self.parts.delete().where(self.parts.c.group_id == group_id))
            conn.execute(table.delete().where(table.c.key.in_([key, _parts_key(group_id)])))
            conn.execute(table.insert().values(key=key, value=-1, expires_at=until))

        self._run(work)


def _claim_key(group_id: str) -> str:
    return f"{GROUP_KEY_PREFIX}{group_id}.c"


def _parts_key(group_id: str) -> str:
    return f"{GROUP_KEY_PREFIX}{group_id}.j"


def _insert_ignoring_duplicates(
    conn: sa.Connection, table: sa.Table, values: dict[str, Any]
) -> bool:
    """INSERT unless the primary key exists (concurrent duplicates wait, then do nothing)."""
    name = conn.dialect.name
    if name in {"postgresql", "sqlite"}:
        insert = (postgresql.insert if name == "postgresql" else sqlite.insert)(table)
        statement: Any = insert.values(**values).on_conflict_do_nothing()
    elif name in {"mysql", "mariadb"}:
        statement = table.insert().values(**values).prefix_with("IGNORE")
    else:
        exists = sa.select(sa.literal(1)).where(
            *(column == values[column.name] for column in table.primary_key.columns)
        )
        if conn.execute(exists).first() is not None:
            return False
        statement = table.insert().values(**values)
    return bool(conn.execute(statement).rowcount)


def _increment(
    conn: sa.Connection, table: sa.Table, key: str, amount: int, expires_at: datetime | None
) -> int:
    """One atomic upsert per dialect; the new value is read back inside the transaction."""
    values = {"key": key, "value": amount, "expires_at": expires_at}
    name = conn.dialect.name
    if name in {"postgresql", "sqlite"}:
        insert = (postgresql.insert if name == "postgresql" else sqlite.insert)(table)
        upsert = insert.values(**values).on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "value": table.c.value + insert.excluded.value,
                "expires_at": insert.excluded.expires_at,
            },
        )
        return int(conn.execute(upsert.returning(table.c.value)).scalar_one())
    current = sa.select(table.c.value).where(table.c.key == key).with_for_update()
    if name in {"mysql", "mariadb"}:
        my_insert = mysql.insert(table).values(**values)
        conn.execute(
            my_insert.on_duplicate_key_update(
                value=table.c.value + my_insert.inserted.value,
                expires_at=my_insert.inserted.expires_at,
            )
        )
        return int(conn.execute(current).scalar_one())  # the upsert holds the row lock
    # Any other dialect: lock the row (or insert it; a lost race is retried by the caller).
    found = conn.execute(current).scalar()
    if found is None:
        conn.execute(table.insert().values(**values))
        return amount
    conn.execute(
        table.update().where(table.c.key == key).values(value=found + amount, expires_at=expires_at)
    )
    return int(found) + amount


def _alone(exc: BaseException) -> BaseException:
    """``exc`` without its chain and traceback: the driver's error, SQLAlchemy's wrapping of
    it and each failed attempt would print the same stack again (~190 lines for one outage);
    the one error we raise names the cause already."""
    exc.__cause__ = exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is None and orig is not None and orig.args:
        code = orig.args[0]
    return str(code) in _RETRY_CODES


def _require_driver(url: str, sa_url: str) -> None:
    """Fail now, naming the fix, when the URL's dialect is unknown or its driver missing:
    our extras' drivers by the extra, any other (``psycopg2``, ``mysqldb``) by SQLAlchemy's
    own import error."""
    scheme = sa_url.partition("://")[0]
    driver = scheme.partition("+")[2]
    named = url.partition("://")[0]
    if driver in _DRIVER_EXTRAS:
        module, extra = _DRIVER_EXTRAS[driver]
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(
                f"the {named}:// result backend needs the {module} driver:"
                f' pip install "caraway[{extra}]"'
            )
        return
    try:
        dialect = sa.engine.make_url(sa_url).get_dialect()
    except sa.exc.NoSuchModuleError as exc:
        raise ImproperlyConfigured(
            f"SQLAlchemy has no dialect {scheme!r} (from {named}://): {exc}"
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise ImproperlyConfigured(f"bad database URL {mask_url(url)!r}: {exc}") from exc
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise MissingExtra(
            f"the {named}:// result backend needs the driver {driver or scheme!r}, which is"
            f" not installed ({exc}); install it, or drop the driver from the URL to use"
            " caraway's (caraway[postgresql]: psycopg 3, caraway[mysql]: PyMySQL)"
        ) from exc
