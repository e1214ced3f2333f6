"""The SQL backend without a server: URLs, Celery's meta <-> row mapping, and group pickles."""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from caraway import Caraway, states
from caraway.engines.registry import create_backend
from caraway.engines.sql import backend as sql
from caraway.engines.sql.backend import SQLBackend, meta_from_row, row_from_meta, sqlalchemy_url
from caraway.engines.sql.models import CompatPickler, GroupTuple, SafePickler, build_tables
from caraway.exceptions import ImproperlyConfigured, MissingExtra, OperationalError


def _app(**conf: Any) -> Caraway:
    return Caraway("sql-unit", broker="memory://sql-unit", set_as_current=False, **conf)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("db+postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("db+postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("db+mysql://root@h:3306/db", "mysql+pymysql://root@h:3306/db"),
        ("db+mysql+pymysql://root@h/db", "mysql+pymysql://root@h/db"),
        ("db+mariadb://root@h/db", "mariadb+pymysql://root@h/db"),
        ("db+sqlite:///results.db", "sqlite:///results.db"),
        ("db+sqlite:////abs/results.db", "sqlite:////abs/results.db"),
        ("db+postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("db+mysql+mysqldb://u@h/db", "mysql+mysqldb://u@h/db"),
    ],
)
def test_urls_map_to_sqlalchemy_with_a_driver(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected


def test_every_db_scheme_picks_the_sql_backend_without_connecting() -> None:
    app = _app(database_create_tables_at_setup=False)
    for url in ("db+postgresql://nobody@127.0.0.1:1/x", "db+mysql://nobody@127.0.0.1:1/x"):
        assert isinstance(create_backend(app, url), SQLBackend)
    assert type(create_backend(app, "sqlite:///plain.db")).__name__ == "SQLiteBackend"


@pytest.mark.parametrize(
    "url",
    ["db+postgresql+psycopg2://u@127.0.0.1:1/x", "db+sqlite+pysqlite:///x.db",
     "DB+MySQL+PyMySQL://u@127.0.0.1:1/x"],
)  # fmt: skip
def test_any_sqlalchemy_dialect_and_driver_after_db_plus_is_the_sql_backend(url: str) -> None:
    """Celery's rule: ``db+`` then any SQLAlchemy URL (the table lists only our defaults)."""
    backend = create_backend(_app(database_create_tables_at_setup=False), url)
    assert isinstance(backend, SQLBackend)


@pytest.mark.parametrize("driver", ["pg8000", "mysqldb"])
def test_a_driver_that_is_not_installed_is_named_with_the_way_out(driver: str) -> None:
    dialect = "postgresql" if driver == "pg8000" else "mysql"
    with pytest.raises(MissingExtra, match=f"needs the driver '{driver}'.*drop the driver"):
        create_backend(_app(), f"db+{dialect}+{driver}://u@127.0.0.1:1/x")


def test_an_unknown_dialect_after_db_plus_names_it() -> None:
    with pytest.raises(ImproperlyConfigured, match="SQLAlchemy has no dialect 'nosuchdb'"):
        create_backend(_app(), "db+nosuchdb://u@h/x")


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(MissingExtra, match=r'pip install "caraway\[postgresql\]"'):
        create_backend(_app(), "db+postgresql://u@h/db")
    with pytest.raises(MissingExtra, match=r'pip install "caraway\[mysql\]"'):
        create_backend(_app(), "db+mysql://u@h/db")


def test_database_errors_are_translated_with_the_password_masked() -> None:
    backend = create_backend(
        _app(database_create_tables_at_setup=False), "db+postgresql://user:s3cret@127.0.0.1:1/x"
    )

    with pytest.raises(OperationalError) as caught:
        backend.get_task_meta("some-id")

    assert "s3cret" not in str(caught.value)
    assert "user:**@" in str(caught.value)
    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
    # One error and its cause, not the driver's stack three times (one per wrapping/attempt).
    printed = "".join(traceback.format_exception(caught.value))
    assert printed.count("Traceback (most recent call last)") == 1, printed
    assert printed.count("The above exception") == 1, printed
    assert "During handling" not in printed, printed


def _request(**extra: Any) -> SimpleNamespace:
    fields = dict(
        id="t1", task="proj.add", args=[1, 2], kwargs={"z": 3}, hostname="w1@host", retries=2,
        delivery_info={"routing_key": "celery"}, children=[], group="g1", parent_id="p1",
    )  # fmt: skip
    return SimpleNamespace(**{**fields, **extra})


def test_a_meta_maps_onto_celerys_columns() -> None:
    backend = create_backend(
        _app(result_extended=True, database_create_tables_at_setup=False), "db+sqlite:///x.db"
    )
    meta = backend.build_meta("t1", KeyError("k"), states.FAILURE, "Traceback", _request())

    row = row_from_meta(meta, backend._encode_field, extended=True)

    assert row["status"] == "FAILURE"
    assert row["result"] == {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"}
    assert row["traceback"] == "Traceback"
    assert isinstance(row["date_done"], datetime)
    assert row["date_done"].tzinfo is None  # naive UTC, as Celery's DateTime column holds
    assert (row["name"], row["worker"], row["retries"], row["queue"]) == (
        "proj.add",
        "w1@host",
        2,
        "celery",
    )
    assert (json.loads(row["args"]), json.loads(row["kwargs"])) == ([1, 2], {"z": 3})
    assert not {"children", "group_id", "parent_id", "task_id"} & set(row)  # no such columns


def test_a_not_ready_state_has_no_date_done() -> None:
    backend = create_backend(_app(database_create_tables_at_setup=False), "db+sqlite:///x.db")
    meta = backend.build_meta("t1", {"pid": 1}, states.STARTED)

    row = row_from_meta(meta, backend._encode_field, extended=False)

    assert (row["status"], row["result"], row["date_done"]) == ("STARTED", {"pid": 1}, None)
    assert "name" not in row


def test_a_row_reads_back_as_caraways_meta() -> None:
    row = {
        "status": "SUCCESS", "result": 5, "traceback": None,
        "date_done": datetime(2025, 1, 2, 3, 4, 5), "name": "proj.add",
        "args": b"[1, 2]", "kwargs": b"{}", "worker": "w1", "retries": 0, "queue": "celery",
    }  # fmt: skip

    meta = meta_from_row("t1", row, json.loads, extended=True)

    assert meta == {
        "status": "SUCCESS", "result": 5, "traceback": None, "children": [],
        "date_done": "2025-01-02T03:04:05+00:00", "name": "proj.add", "args": [1, 2],
        "kwargs": {}, "worker": "w1", "retries": 0, "queue": "celery", "task_id": "t1",
    }  # fmt: skip


def test_an_exception_pickled_by_celery_reads_as_the_wire_dict() -> None:
    row = {"status": "FAILURE", "result": ValueError("bad"), "traceback": "tb", "date_done": None}

    meta = meta_from_row("t1", row, json.loads, extended=False)

    assert meta["result"] == {
        "exc_type": "ValueError",
        "exc_message": ["bad"],
        "exc_module": "builtins",
    }


def test_the_tables_have_celerys_names_and_types() -> None:
    _, task, group, _ = build_tables(extended=True)

    assert (task.name, group.name) == ("celery_taskmeta", "celery_tasksetmeta")
    assert [column.name for column in task.columns] == [
        "id", "task_id", "status", "result", "date_done", "traceback",
        "name", "args", "kwargs", "worker", "retries", "queue",
    ]  # fmt: skip
    assert task.c.id.default.name == "task_id_sequence"  # type: ignore[union-attr]
    assert group.c.id.default.name == "taskset_id_sequence"  # type: ignore[union-attr]
    assert task.c.task_id.type.length == 155  # type: ignore[attr-defined]
    assert isinstance(task.c.result.type, sa.PickleType)
    assert isinstance(task.c.args.type, sa.LargeBinary)
    _, named, _, _ = build_tables({"task": "mine"}, {"task": "results"})
    assert (named.name, named.schema) == ("mine", "results")


class _FakeCelery:
    """A stand-in ``celery.result`` whose classes reduce the way Celery's do."""

    def __init__(self) -> None:
        self.celery = ModuleType("celery")
        self.result = ModuleType("celery.result")
        self.base = ModuleType("celery.backends.base")

        class AsyncResult:
            def __init__(self, id: str, backend: Any = None, task_name: Any = None,
                         app: Any = None, parent: Any = None) -> None:  # fmt: skip
                self.id, self.backend, self.parent = id, backend, parent

            def __reduce__(self) -> Any:
                return self.__class__, (self.id, self.backend, None, None, self.parent)

        class GroupResult:
            def __init__(self, id: Any = None, results: Any = None, parent: Any = None) -> None:
                self.id, self.results, self.parent = id, results, parent

            def __reduce__(self) -> Any:
                return self.__class__, (self.id, self.results)

        class Backend:
            def __reduce__(self) -> Any:
                return unpickle_backend, (Backend, (), {"url": "db+postgresql://x"})

        def unpickle_backend(cls: Any, args: Any, kwargs: Any) -> Any:
            return cls()

        for obj, module in ((AsyncResult, self.result), (GroupResult, self.result),
                            (Backend, self.base), (unpickle_backend, self.base)):  # fmt: skip
            obj.__module__ = module.__name__
            obj.__qualname__ = obj.__name__
            setattr(module, obj.__name__, obj)
        self.AsyncResult, self.GroupResult, self.Backend = AsyncResult, GroupResult, Backend

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "celery", self.celery)
        monkeypatch.setitem(sys.modules, "celery.result", self.result)
        monkeypatch.setitem(sys.modules, "celery.backends.base", self.base)


def test_a_saved_group_unpickles_as_celerys_group_result(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCelery()
    data = CompatPickler.dumps(
        GroupTuple([["g1", None], [[["t1", None], None], [["t2", [["t1", None], None]], None]]])
    )
    fake.install(monkeypatch)

    group = pickle.loads(data)

    assert isinstance(group, fake.GroupResult)
    assert group.id == "g1"
    assert [member.id for member in group.results] == ["t1", "t2"]
    assert group.results[1].parent.id == "t1"


def test_a_group_pickled_by_celery_reads_as_the_tuple_form(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCelery()
    with monkeypatch.context() as patched:
        fake.install(patched)
        backend = fake.Backend()
        data = pickle.dumps(
            fake.GroupResult("g1", [fake.AsyncResult("t1", backend), fake.AsyncResult("t2")])
        )

    assert "celery" not in sys.modules or sys.modules["celery"] is not fake.celery
    assert CompatPickler.loads(data) == [
        ["g1", None],
        [[["t1", None], None], [["t2", None], None]],
    ]


class _RunsCode:
    """A pickle that would run a command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return os.system, (f"touch {self.marker}",)


def test_an_untrusted_result_column_reads_plain_values_only(tmp_path: Path) -> None:
    values = [
        {"a": [1, 2.5, None, True]}, ("t", b"raw"), {1, 2}, frozenset({3}),
        datetime(2025, 1, 2, tzinfo=timezone.utc), Decimal("1.5"), uuid.UUID(int=7),
        ValueError("bad"), {"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"},
    ]  # fmt: skip
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        for value in values:
            loaded = SafePickler.loads(pickle.dumps(value, protocol))
            assert repr(loaded) == repr(value)

    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError, match=r"names posix\.system"):
        SafePickler.loads(pickle.dumps(_RunsCode(marker)))
    assert not marker.exists()
    CompatPickler.loads(pickle.dumps(_RunsCode(marker)))  # trusted: pickle, as Celery reads it
    assert marker.exists()


def test_the_result_column_trusts_pickles_only_with_the_pickle_serializer() -> None:
    def pickler(**conf: Any) -> Any:
        backend = create_backend(
            _app(database_create_tables_at_setup=False, **conf), "db+sqlite:///:memory:"
        )
        return backend.tasks.c.result.type.pickler, backend.groups.c.result.type.pickler

    assert pickler() == (SafePickler, SafePickler)  # json, the default
    assert pickler(result_serializer="pickle") == (CompatPickler, CompatPickler)


def test_an_untrusted_backend_still_reads_celerys_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCelery()
    with monkeypatch.context() as patched:
        fake.install(patched)
        data = pickle.dumps(fake.GroupResult("g1", [fake.AsyncResult("t1", fake.Backend())]))

    assert SafePickler.loads(data) == [["g1", None], [[["t1", None], None]]]
