"""A real worker storing results in PostgreSQL, MariaDB and SQLite (SQLAlchemy), and rows
read and written the way Celery's database backend does."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from worker_support import WAIT, ThreadedWorker

from caraway import Celery, states


def _load_factories() -> ModuleType:
    """``tests/contract/factories_sql.py`` (loaded by path: the tests are not a package)."""
    path = Path(__file__).parent.parent / "contract" / "factories_sql.py"
    spec = importlib.util.spec_from_file_location("caraway_worker_factories_sql", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


factories = _load_factories()


def celery_task_table(name: str) -> sa.Table:
    """The task table as a Celery client declares it (``result_extended`` columns included)."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, sa.Sequence("task_id_sequence"), primary_key=True),
        sa.Column("task_id", sa.String(155), unique=True),
        sa.Column("status", sa.String(50)),
        sa.Column("result", sa.PickleType, nullable=True),
        sa.Column("date_done", sa.DateTime, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("name", sa.String(155), nullable=True),
        sa.Column("args", sa.LargeBinary, nullable=True),
        sa.Column("kwargs", sa.LargeBinary, nullable=True),
        sa.Column("worker", sa.String(155), nullable=True),
        sa.Column("retries", sa.Integer, nullable=True),
        sa.Column("queue", sa.String(155), nullable=True),
    )


@pytest.fixture(scope="module", params=["postgresql", "mariadb", "sqlalchemy-sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    with factories.sql_database(request.param, tmp_path_factory.mktemp("sql")) as (url, conf):
        app = Celery(
            "sql-results", broker=f"memory://sql-{uuid.uuid4().hex}", backend=url,
            result_extended=True, **conf,
        )  # fmt: skip
        entered, release = threading.Event(), threading.Event()
        attempts: list[int] = []

        @app.task
        def add(x: int, y: int) -> int:
            return x + y

        @app.task
        def fail() -> None:
            raise KeyError("nope")

        @app.task(bind=True, max_retries=1)
        def flaky(self: Any) -> str:
            attempts.append(self.request.retries)
            if self.request.retries == 0:
                raise self.retry(countdown=0.01)
            return "ok"

        @app.task(bind=True)
        def progress(self: Any) -> str:
            self.update_state(state="PROGRESS", meta={"step": 1, "of": 2})
            entered.set()
            assert release.wait(WAIT)
            return "finished"

        worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
        engine = app.backend.engine
        table = celery_task_table(conf["database_table_names"]["task"])
        try:
            yield SimpleNamespace(
                app=app, add=add, fail=fail, flaky=flaky, progress=progress, entered=entered,
                release=release, engine=engine, table=table, kind=request.param,
            )  # fmt: skip
        finally:
            worker.stop()
            app.close()


def _row(served: SimpleNamespace, task_id: str) -> Any:
    with served.engine.connect() as conn:
        return conn.execute(sa.select(served.table).where(served.table.c.task_id == task_id)).one()


def test_a_result_comes_back_with_the_extended_fields(served: SimpleNamespace) -> None:
    result = served.add.delay(2, 3)

    assert result.get(timeout=WAIT) == 5
    meta = served.app.backend.get_task_meta(result.id)
    assert meta["name"] == served.add.name
    assert (meta["args"], meta["kwargs"], meta["retries"]) == ([2, 3], {}, 0)
    assert meta["queue"] == "celery"
    assert meta["worker"]


def test_a_failure_raises_the_original_exception(served: SimpleNamespace) -> None:
    result = served.fail.delay()

    with pytest.raises(KeyError, match="nope"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert "KeyError" in (result.traceback or "")


def test_a_retried_task_succeeds_and_counts_its_retries(served: SimpleNamespace) -> None:
    result = served.flaky.delay()

    assert result.get(timeout=WAIT) == "ok"
    assert served.app.backend.get_task_meta(result.id)["retries"] == 1


def test_progress_from_update_state_is_visible(served: SimpleNamespace) -> None:
    served.entered.clear()
    served.release.clear()
    result = served.progress.delay()
    assert served.entered.wait(WAIT)

    assert (result.state, result.info) == ("PROGRESS", {"step": 1, "of": 2})
    served.release.set()
    assert result.get(timeout=WAIT) == "finished"


def test_celery_reads_the_rows_caraway_writes(served: SimpleNamespace) -> None:
    done, failed = served.add.delay(20, 22), served.fail.delay()
    assert done.get(timeout=WAIT) == 42
    with pytest.raises(KeyError):
        failed.get(timeout=WAIT)

    row = _row(served, done.id)
    assert (row.status, row.result, row.traceback) == ("SUCCESS", 42, None)
    assert abs(row.date_done - datetime.now(timezone.utc).replace(tzinfo=None)) < timedelta(
        minutes=1
    )
    assert (row.name, json.loads(row.args), json.loads(row.kwargs)) == (
        served.add.name,
        [20, 22],
        {},
    )
    failure = _row(served, failed.id)
    assert failure.status == "FAILURE"
    assert failure.result == {
        "exc_type": "KeyError",
        "exc_message": ["nope"],
        "exc_module": "builtins",
    }
    assert "KeyError: 'nope'" in failure.traceback


def test_caraway_reads_the_rows_celery_writes(served: SimpleNamespace) -> None:
    ok_id, failed_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    exc = {"exc_type": "ValueError", "exc_message": ("bad",), "exc_module": "builtins"}
    with served.engine.begin() as conn:
        conn.execute(
            served.table.insert(),
            [
                {"task_id": ok_id, "status": "SUCCESS", "result": {"n": [1, 2]}, "date_done": now,
                 "traceback": None},
                {"task_id": failed_id, "status": "FAILURE", "result": exc, "date_done": now,
                 "traceback": "Traceback ...\nValueError: bad"},
            ],
        )  # fmt: skip

    assert served.app.AsyncResult(ok_id).get(timeout=WAIT) == {"n": [1, 2]}
    with pytest.raises(ValueError, match="bad"):
        served.app.AsyncResult(failed_id).get(timeout=WAIT)
    assert served.app.AsyncResult(failed_id).traceback.endswith("ValueError: bad")


def test_a_dropped_connection_is_replaced(served: SimpleNamespace) -> None:
    """What a database restart does to the pool: ``pool_pre_ping`` reconnects."""
    if served.kind == "sqlalchemy-sqlite":
        pytest.skip("SQLite has no server connection to lose")
    own = "SELECT pg_backend_pid()" if served.kind == "postgresql" else "SELECT CONNECTION_ID()"
    kill = "SELECT pg_terminate_backend({})" if served.kind == "postgresql" else "KILL {}"
    with served.engine.connect() as conn:
        pid = conn.execute(sa.text(own)).scalar()
    killer = sa.create_engine(served.engine.url, poolclass=sa.pool.NullPool)
    with killer.begin() as conn:
        conn.execute(sa.text(kill.format(int(pid))))
    killer.dispose()

    assert served.add.delay(1, 1).get(timeout=WAIT) == 2


def test_a_group_row_unpickles_as_a_group_for_celery(served: SimpleNamespace) -> None:
    group_id, member = str(uuid.uuid4()), str(uuid.uuid4())
    served.app.backend.save_group(group_id, [[group_id, None], [[[member, None], None]]])

    # The same row through a plain binary column: what a Celery client would unpickle.
    raw_groups = sa.table(
        served.app.backend.groups.name,
        sa.column("taskset_id", sa.String),
        sa.column("result", sa.LargeBinary),
    )
    with served.engine.connect() as conn:
        raw = conn.execute(
            sa.select(raw_groups.c.result).where(raw_groups.c.taskset_id == group_id)
        ).scalar_one()
    assert b"celery.result\nGroupResult" in bytes(raw)
    assert served.app.backend.restore_group(group_id) == [
        [group_id, None],
        [[[member, None], None]],
    ]
