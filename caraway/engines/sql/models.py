"""Celery's result tables (``celery_taskmeta``, ``celery_tasksetmeta``) and their pickles.

The tables are declared column for column as Celery's SQLAlchemy backend declares them, so a
database shared with Celery clients keeps one schema. The ``result`` columns are
``PickleType``; this module reads and writes them without Celery installed:

* a task's ``result`` holds the raw return value, or the exception as the wire dict
  ``{"exc_type", "exc_message", "exc_module"}`` (Celery's form for non-pickle serializers);
* a group's ``result`` holds a pickled ``celery.result.GroupResult``. We write that pickle
  from opcodes (the class cannot be imported here), and read one back into caraway's tuple
  form ``[[id, parent], children]`` with an unpickler that never imports ``celery``.

Unpickling runs whatever a pickle names, so it is trusted only with ``result_serializer =
"pickle"`` (whoever can write the table can then run code in every reader, as in Celery).
With any other serializer the columns are read by ``SafePickler``: builtin values, the
date, decimal and uuid types, builtin exceptions and Celery's result classes, nothing else.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import io
import pickle
import struct
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from caraway import exceptions

TASK_TABLE = "celery_taskmeta"
GROUP_TABLE = "celery_tasksetmeta"
COUNTER_TABLE = "caraway_chord_counters"
PARTS_TABLE = "caraway_chord_parts"

#: The columns Celery adds to the task table with ``result_extended``.
EXTENDED_COLUMNS = ("name", "args", "kwargs", "worker", "retries", "queue")


@dataclass(frozen=True, slots=True)
class GroupTuple:
    """A group in caraway's tuple form, pickled as ``celery.result.GroupResult``."""

    value: Any


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result column Celery 5.7 wrote already encoded by its result serializer (JSON by
    default) instead of pickled: the backend decodes it with its own serializer."""

    data: bytes


def _is_pickle(data: bytes) -> bool:
    """Pickles of protocol 2 and above (Celery's and ours) open with PROTO (0x80)."""
    return data[:1] == pickle.PROTO


class CompatPickler:
    """``PickleType(pickler=...)``: plain pickle, except groups and Celery's result classes."""

    @staticmethod
    def dumps(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
        if isinstance(value, GroupTuple):
            return _PROTO_2 + _result_opcodes(value.value) + pickle.STOP
        return pickle.dumps(value, protocol)

    @staticmethod
    def loads(data: bytes) -> Any:
        if not _is_pickle(data):
            return Encoded(bytes(data))
        return _CeleryFreeUnpickler(io.BytesIO(data)).load()


class SafePickler(CompatPickler):
    """``CompatPickler`` that refuses every class outside ``SAFE_GLOBALS`` (see the module doc)."""

    @staticmethod
    def loads(data: bytes) -> Any:
        if not _is_pickle(data):
            return Encoded(bytes(data))
        return _SafeUnpickler(io.BytesIO(data)).load()


# --- writing a GroupResult without celery ------------------------------------------------

_PROTO_2 = b"\x80\x02"  # every Python 3 unpickler reads protocol 2


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _result_opcodes(node: Any) -> bytes:
    """``AsyncResult(id, None, None, None, parent)`` / ``GroupResult(id, [..], parent)``."""
    (task_id, parent), children = node
    parent_ops = pickle.NONE if parent is None else _result_opcodes(parent)
    if children is None:
        none = pickle.NONE
        args = _text(str(task_id)) + none + none + none + parent_ops
        return _global("celery.result", "AsyncResult") + pickle.MARK + args + b"tR"
    items = b"".join(_result_opcodes(child) for child in children)
    members = pickle.EMPTY_LIST + (pickle.MARK + items + pickle.APPENDS if children else b"")
    args = _text(str(task_id)) + members + parent_ops
    return _global("celery.result", "GroupResult") + pickle.MARK + args + b"tR"


# --- reading Celery's pickles without celery ---------------------------------------------


def _async_result(task_id: Any, *args: Any, **kwargs: Any) -> list[Any]:
    parent = kwargs.get("parent", args[3] if len(args) > 3 else None)
    return [[task_id, parent], None]


def _group_result(group_id: Any = None, results: Any = None, *args: Any, **kwargs: Any) -> Any:
    parent = kwargs.get("parent", args[0] if args else None)
    return [[group_id, parent], list(results or [])]


def _ignored(*args: Any, **kwargs: Any) -> None:
    """Stands for Celery objects a result pickle drags along (its backend, its app)."""


class _CeleryFreeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "celery.result":
            if name == "AsyncResult":
                return _async_result
            if name in {"GroupResult", "ResultSet"}:
                return _group_result
        if module == "celery.exceptions":
            found = getattr(exceptions, name, None)
            if isinstance(found, type):
                return found
        if module == "celery" or module.startswith("celery."):
            return _ignored
        return super().find_class(module, name)


#: What a result column may name when it is not trusted: values a task can return under a
#: non-pickle serializer (``_codecs.encode`` is how protocol 2 writes bytes).
SAFE_GLOBALS = {
    ("builtins", name) for name in ("set", "frozenset", "bytearray", "complex", "slice", "range")
} | {
    ("_codecs", "encode"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"),
    ("decimal", "Decimal"), ("uuid", "UUID"), ("collections", "OrderedDict"),
}  # fmt: skip


class _SafeUnpickler(_CeleryFreeUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "celery" or module.startswith("celery."):
            return super().find_class(module, name)
        # Protocol 2 names classes as Python 2 did (``__builtin__.set``, ``exceptions.X``).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "builtins":
            found = getattr(builtins, name, None)
            if isinstance(found, type) and issubclass(found, BaseException):
                return found
        raise pickle.UnpicklingError(
            f"the SQL result column names {module}.{name}, which only a trusted pickle may"
            " (result_serializer is not 'pickle'): refusing to unpickle it"
        )


# --- the tables --------------------------------------------------------------------------


def build_tables(
    names: dict[str, str] | None = None,
    schemas: dict[str, str] | None = None,
    extended: bool = False,
    trusted: bool = True,
) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    """Celery's task and group tables (``database_table_names``/``_schemas``), and our counters.

    ``trusted``: the ``result`` columns may unpickle anything (``result_serializer`` pickle).

    Celery's columns are set by its backend on every write, so no Python-side defaults are
    declared here beyond the DDL that Celery's ``create_all`` produces.
    """
    names, schemas = names or {}, schemas or {}
    pickler = CompatPickler if trusted else SafePickler
    metadata = sa.MetaData()
    task_schema, group_schema = schemas.get("task"), schemas.get("group")
    # Celery 5.6 widens the ids to BIGINT on SQL Server only.
    id_type = sa.Integer().with_variant(sa.BigInteger(), "mssql")
    columns: list[sa.Column[Any]] = [
        sa.Column(
            "id",
            id_type,
            sa.Sequence("task_id_sequence", schema=task_schema),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.String(155), unique=True),
        sa.Column("status", sa.String(50)),
        sa.Column("result", sa.PickleType(pickler=pickler), nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        sa.Column("traceback", sa.Text, nullable=True),
    ]
    if extended:
        columns += [
            sa.Column("name", sa.String(155), nullable=True),
            sa.Column("args", sa.LargeBinary, nullable=True),
            sa.Column("kwargs", sa.LargeBinary, nullable=True),
            sa.Column("worker", sa.String(155), nullable=True),
            sa.Column("retries", sa.Integer, nullable=True),
            sa.Column("queue", sa.String(155), nullable=True),
        ]
    task = sa.Table(
        names.get("task") or TASK_TABLE,
        metadata,
        *columns,
        schema=task_schema,
        sqlite_autoincrement=True,
    )
    group = sa.Table(
        names.get("group") or GROUP_TABLE,
        metadata,
        sa.Column(
            "id",
            id_type,
            sa.Sequence("taskset_id_sequence", schema=group_schema),
            autoincrement=True,
            primary_key=True,
        ),
        sa.Column("taskset_id", sa.String(155), unique=True),
        sa.Column("result", sa.PickleType(pickler=pickler), nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True, index=True),
        schema=group_schema,
        sqlite_autoincrement=True,
    )
    counters = sa.Table(
        COUNTER_TABLE,
        metadata,
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=True, index=True),
        schema=task_schema,
    )
    return metadata, task, group, counters


def build_parts_table(metadata: sa.MetaData, schema: str | None = None) -> sa.Table:
    """Chord header results, one row per ``<task_id>:<index>`` (a redelivery adds nothing)."""
    return sa.Table(
        PARTS_TABLE,
        metadata,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("member", sa.String(200), primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=True, index=True),
        schema=schema,
    )


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """CREATE TABLE for each missing table. Another process (or thread) creating the same
    tables between the check and the CREATE fails this try; each failure means someone else
    created a table, so one try per table more is always enough."""
    tries = len(metadata.tables) + 1
    for attempt in range(tries):
        try:
            metadata.create_all(engine)
            return
        except sa.exc.DBAPIError:
            if attempt + 1 >= tries:
                raise
