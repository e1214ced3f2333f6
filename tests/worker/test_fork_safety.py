"""A forked child (a prefork pool child) never uses a connection its parent opened.

Each test connects a client in this process, forks, and has the child use the same client
object: the server must see another connection (its own id for it), and the parent's
connection must still work once the child has exited.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from services import rabbitmq_vhost, require
from test_sql_backend import factories

from caraway import Celery, states
from caraway.engines.sqlite.database import Database

T = TypeVar("T")

#: The server's id for the connection a query runs on.
CONNECTION_ID = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}


def in_child(work: Callable[[], T]) -> T:
    """``work()`` run in a forked child; its value (or exception) comes back pickled."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            try:
                answer: Any = ("ok", work())
            except BaseException as exc:
                answer = ("error", repr(exc))
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(answer, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answers:
        data = answers.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", f"the child failed: {value}"
    result: T = value
    return result


@pytest.fixture(params=["postgresql", "mariadb"])
def sql_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Celery, str]]:
    with factories.sql_database(request.param, tmp_path) as (url, conf):
        app = Celery("fork-sql", broker="memory://", backend=url, set_as_current=False, **conf)
        try:
            yield app, request.param
        finally:
            app.close()


def _server_id(engine: sa.Engine, kind: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(CONNECTION_ID[kind])).scalar_one())


def test_a_child_opens_its_own_sql_connection(sql_app: tuple[Celery, str]) -> None:
    app, kind = sql_app
    backend = app.backend
    backend.store_result("parent-task", 1, states.SUCCESS)
    parent_id = _server_id(backend.engine, kind)

    def child() -> int:
        backend.store_result("child-task", 2, states.SUCCESS)
        return _server_id(backend.engine, kind)

    child_id = in_child(child)

    assert child_id != parent_id
    assert backend.get_task_meta("child-task")["result"] == 2
    # The parent's pool still works and never took the child's connection (the pool may
    # hold more than one of its own, so the id may be another of the parent's).
    assert _server_id(backend.engine, kind) != child_id


def test_a_child_opens_its_own_redis_connections() -> None:
    host, port = require("redis")
    prefix = f"fork-{uuid.uuid4().hex[:8]}:"
    app = Celery(
        "fork-redis", broker="memory://", backend=f"redis://{host}:{port}/1",
        result_backend_transport_options={"global_keyprefix": prefix}, set_as_current=False,
    )  # fmt: skip
    backend = app.backend
    try:
        backend.store_result("parent-task", 1, states.SUCCESS)
        parent_ids = (backend.client.client_id(), backend._lane.call(["CLIENT", "ID"])[0])

        def child() -> tuple[int, int]:
            backend.store_result("child-task", 2, states.SUCCESS)
            return backend.client.client_id(), backend._lane.call(["CLIENT", "ID"])[0]

        child_ids = in_child(child)

        assert not set(child_ids) & set(parent_ids)
        assert backend.get_task_meta("child-task")["result"] == 2
        assert backend.client.client_id() == parent_ids[0]
    finally:
        backend.client.delete(*backend.client.keys(f"{prefix}*"))
        app.close()


def test_a_child_opens_its_own_sqlite_connection(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "fork.sqlite3")
    db.ensure_schema("fork", "CREATE TABLE t (v INTEGER)")
    parent = db.connection()

    def child() -> tuple[bool, bool]:
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        return db.connection() is parent, db is Database.open(tmp_path / "fork.sqlite3")

    assert in_child(child) == (False, True)
    assert parent.execute("SELECT v FROM t").fetchall() == [(2,)]


def test_a_child_publishes_on_its_own_amqp_connection() -> None:
    with rabbitmq_vhost("fork") as url:
        app = Celery("fork-amqp", broker=url, backend="memory://", set_as_current=False)

        @app.task(name="fork.noop")
        def noop() -> None: ...

        try:
            noop.delay()
            parent_port = app.broker._publisher.conn.sock.getsockname()[1]

            def child() -> int:
                noop.delay()
                port: int = app.broker._publisher.conn.sock.getsockname()[1]
                return port

            assert in_child(child) != parent_port
            noop.delay()  # our connection still works
            assert app.broker.size("celery") == 3
        finally:
            app.close()


def test_a_child_sends_rpc_results_on_its_own_amqp_connection() -> None:
    with rabbitmq_vhost("fork") as url:
        app = Celery("fork-rpc", broker=url, backend="rpc://", set_as_current=False)
        writer = app.backend._writer
        try:
            with writer.lock:
                writer.open()
                parent_port = writer.conn.sock.getsockname()[1]

            def child() -> int:
                with writer.lock:
                    writer.open()
                    port: int = writer.conn.sock.getsockname()[1]
                    return port

            assert in_child(child) != parent_port
        finally:
            app.close()
