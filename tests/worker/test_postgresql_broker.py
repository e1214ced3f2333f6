"""Workers on the PostgreSQL broker: tasks, ETAs, revocations, remote control, an idle worker
that runs no statement, and tasks sent inside the application's own transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from postgresql_support import postgresql_app, postgresql_schema
from sqlalchemy.orm import Session
from worker_support import WAIT, wait_until

from caraway import Celery, states


@pytest.fixture
def app() -> Iterator[Celery]:
    with postgresql_schema() as (url, schema):
        app = postgresql_app("pgworker", url, schema)
        app.seen = []  # type: ignore[attr-defined]
        try:
            yield app
        finally:
            app.close()


def _tasks(app: Celery) -> tuple[Any, Any]:
    seen: list[str] = app.seen  # type: ignore[attr-defined]

    @app.task(name="pg.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="pg.record")
    def record(key: str) -> str:
        seen.append(key)
        return key

    return add, record


def test_tasks_run_with_results_in_the_same_database(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    add, record = _tasks(app)
    start_worker(app)

    assert add.delay(2, 3).get(timeout=WAIT) == 5
    sent_at = time.monotonic()
    assert record.apply_async(("later",), countdown=1).get(timeout=WAIT) == "later"
    assert time.monotonic() - sent_at >= 0.9  # the broker held it until its ETA
    assert app.control.ping(timeout=2.0)  # remote control over NOTIFY


def test_a_revoked_eta_task_never_runs(app: Celery, start_worker: Callable[..., Any]) -> None:
    _, record = _tasks(app)
    start_worker(app)
    result = record.apply_async(("revoked",), countdown=2)

    result.revoke()

    wait_until(lambda: result.state == states.REVOKED, what="the task marked revoked")
    assert record.delay("after").get(timeout=WAIT) == "after"
    time.sleep(2.5)  # past the ETA: a revocation that was missed would let it run now
    assert "revoked" not in app.seen  # type: ignore[attr-defined]


def _count_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg sends from this process, in order (the worker is a thread)."""
    statements: list[str] = []
    lock = threading.Lock()
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def counting_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            statements.append(str(query))
        return execute(self, query, *args, **kwargs)

    def counting_executemany(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            statements.append(str(query))
        return executemany(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting_execute)
    monkeypatch.setattr(psycopg.Cursor, "executemany", counting_executemany)
    return statements


def test_an_idle_worker_runs_no_statement_on_its_queues(
    app: Celery, start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN, not polling: while nothing happens, the worker's fetches, revocation polls
    and lease renewals reach no table. Only its heartbeat event (every 2 s, broadcast) is
    written; then a task sent wakes it at once."""
    add, _ = _tasks(app)
    statements = _count_statements(monkeypatch)
    start_worker(app)
    assert add.delay(1, 1).get(timeout=WAIT) == 2
    time.sleep(1.0)  # the last acks and result writes land
    statements.clear()

    time.sleep(4.0)  # idle: what the worker sends now is all it sends when nothing happens

    idle = list(statements)
    on_queues = [s for s in idle if "caraway_messages" in s or "caraway_revoked" in s]
    assert on_queues == [], idle
    assert len(idle) <= 8, idle  # two heartbeat events at most (insert + notify each)
    started = time.monotonic()
    assert add.delay(2, 2).get(timeout=WAIT) == 4
    assert time.monotonic() - started < 2.0  # woken by NOTIFY, not by a slow poll


def test_a_task_sent_in_a_transaction_runs_only_once_it_commits(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    _, record = _tasks(app)
    start_worker(app)
    url = str(app.conf.broker_url)

    with psycopg.connect(url) as conn:  # the application's connection, not autocommit
        conn.execute("SELECT 1")  # a transaction is open
        result = record.apply_async(("committed",), connection=conn)
        time.sleep(1.0)  # a worker that could see it would run it now
        assert "committed" not in app.seen  # type: ignore[attr-defined]
        assert app.broker.size("celery") == 0
        conn.commit()

    assert result.get(timeout=WAIT) == "committed"


def test_a_task_sent_in_a_rolled_back_transaction_never_runs(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    _, record = _tasks(app)
    start_worker(app)
    url = str(app.conf.broker_url)

    with psycopg.connect(url) as conn:
        result = record.apply_async(("rolled back",), connection=conn)
        conn.rollback()

    assert record.delay("after").get(timeout=WAIT) == "after"  # the worker is past that point
    assert "rolled back" not in app.seen  # type: ignore[attr-defined]
    assert result.state == states.PENDING
    assert app.broker.size("celery") == 0


def test_a_sqlalchemy_session_sends_in_its_transaction(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    _, record = _tasks(app)
    start_worker(app)
    url = str(app.conf.broker_url).replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with Session(engine) as session:
            kept = record.apply_async(("session commit",), connection=session)
            session.commit()
        with Session(engine) as session, session.begin():
            dropped = record.apply_async(("session rollback",), connection=session.connection())
            session.rollback()
    finally:
        engine.dispose()

    assert kept.get(timeout=WAIT) == "session commit"
    assert record.delay("after").get(timeout=WAIT) == "after"
    assert "session rollback" not in app.seen  # type: ignore[attr-defined]
    assert dropped.state == states.PENDING


def test_the_worker_reconnects_when_its_connections_are_killed(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    """``pg_terminate_backend`` on the worker's listening and command sessions (a server
    restart or a failover, for this worker): it reconnects, listens again and serves."""
    add, _ = _tasks(app)
    worker = start_worker(app)
    assert add.delay(1, 2).get(timeout=WAIT) == 3
    broker = worker.app.broker
    pids = [broker._listener.backend_pid, broker.db.connection().info.backend_pid]

    with psycopg.connect(str(app.conf.broker_url), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    assert [add.delay(i, i).get(timeout=3 * WAIT) for i in range(5)] == [0, 2, 4, 6, 8]
    assert broker._listener.backend_pid not in pids
