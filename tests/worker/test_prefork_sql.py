"""300 tasks on a real ``-P prefork -c 4`` worker with each SQL result backend: all SUCCESS.

The worker creates the backend (and its tables, ``database_create_tables_at_setup``) before it
forks its children: children that wrote on that inherited connection broke each other's
transactions and died (``WorkerLostError``) on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sql_backend import factories
from worker_support import wait_until

from caraway import Celery, states

TASKS = 300
WAIT = 60.0

SOURCE = """
import json
import os

from caraway import Celery

app = Celery(
    "forksql",
    broker=os.environ["FORKSQL_BROKER"],
    backend=os.environ["FORKSQL_BACKEND"],
    **json.loads(os.environ["FORKSQL_CONF"]),
)


@app.task(name="forksql.add")
def add(x, y):
    return x + y
"""


@pytest.fixture(params=["postgresql", "mariadb", "sqlalchemy-sqlite"])
def worker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    """A client app and a prefork worker (a subprocess) sharing the SQL backend."""
    (tmp_path / "forksql_tasks.py").write_text(SOURCE)
    broker = f"sqlite:///{tmp_path}/broker.sqlite3"
    with factories.sql_database(request.param, tmp_path) as (url, conf):
        path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ, "PYTHONPATH": path,
            "FORKSQL_BROKER": broker, "FORKSQL_BACKEND": url, "FORKSQL_CONF": json.dumps(conf),
        }  # fmt: skip
        app = Celery("forksql", broker=broker, backend=url, set_as_current=False, **conf)
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "caraway", "-A", "forksql_tasks", "worker",
                 "-P", "prefork", "-c", "4", "-l", "INFO"],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield app
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT) == 0
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
            print(log.read_text(errors="replace"))  # shown when the test fails
            app.close()


def test_300_tasks_on_prefork_all_succeed(worker: Celery) -> None:
    ids = [worker.send_task("forksql.add", (n, n)).id for n in range(TASKS)]

    def finished() -> list[dict[str, object]] | None:
        metas = worker.backend.get_many_task_meta(ids)
        return metas if all(meta["status"] in states.READY_STATES for meta in metas) else None

    metas = wait_until(finished, WAIT, f"{TASKS} results")

    assert [meta["status"] for meta in metas] == [states.SUCCESS] * TASKS
    assert [meta["result"] for meta in metas] == [2 * n for n in range(TASKS)]
