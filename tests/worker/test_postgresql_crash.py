"""A worker on the PostgreSQL broker killed with SIGKILL: every task it held (running,
prefetched) runs on the next worker, and the table is empty after."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgresql_support import count_messages, leased_messages, postgresql_schema
from worker_support import TASKS_SOURCE, WAIT, WorkerProject, wait_until

from caraway import states

_SQLITE_APP = """app = Celery(
    "crashproj",
    broker=f"sqlite:///{HERE}/b.sqlite3",
    broker_transport_options={"visibility_timeout": 2},
)"""


def _source(url: str, schema: str) -> str:
    assert _SQLITE_APP in TASKS_SOURCE
    app = (
        f'app = Celery("crashproj", broker={url!r}, result_backend={"db+" + url!r},'
        f' broker_transport_options={{"schema": {schema!r}, "visibility_timeout": 2}},'
        f' database_table_schemas={{"task": {schema!r}, "group": {schema!r}}})'
    )
    return TASKS_SOURCE.replace(_SQLITE_APP, app)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[WorkerProject, str, str]]:
    with postgresql_schema("wcrash") as (url, schema):
        project = WorkerProject(tmp_path, _source(url, schema))
        try:
            yield project, url, schema
        finally:
            project.close()
            project.app.close()


def test_sigkill_loses_no_task_running_or_prefetched(
    project: tuple[WorkerProject, str, str],
) -> None:
    project_, url, schema = project
    tasks = project_.tasks
    first = project_.spawn(pool="threads", concurrency=2)
    project_.ping()
    running = [tasks.late.delay(key) for key in ("run-a", "run-b")]
    project_.wait_marks("run-a", 1)
    project_.wait_marks("run-b", 1)  # both threads busy: what follows waits, prefetched
    waiting = [tasks.late_stamp.delay(f"wait-{i}") for i in range(10)]
    # Its prefetch window (2 threads x 4) holds 8 messages: 2 running, 6 waiting in it.
    wait_until(lambda: leased_messages(url, schema) == 8, what="the window full")

    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    project_.release("run-a")
    project_.release("run-b")
    project_.spawn(pool="threads", concurrency=2)

    assert [r.get(timeout=3 * WAIT) for r in running] == [2, 2]  # second runs of each
    assert sorted(r.get(timeout=3 * WAIT) for r in waiting) == sorted(
        f"wait-{i}" for i in range(10)
    )
    assert all(r.state == states.SUCCESS for r in [*running, *waiting])
    for key in ("run-a", "run-b"):
        assert [run["redelivered"] for run in project_.marks(key)] == [False, True]
    wait_until(lambda: count_messages(url, schema) == 0, what="every message acked")


def test_an_early_acked_task_killed_with_sigkill_is_not_run_again(
    project: tuple[WorkerProject, str, str],
) -> None:
    """Celery's early ack: the message was acked (its ack on its way) before the task ran."""
    project_, url, schema = project
    first = project_.spawn(pool="threads", concurrency=2)
    project_.ping()
    result = project_.tasks.early.delay("early")
    project_.wait_marks("early", 1)

    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    project_.release("early")
    project_.spawn(pool="solo")
    project_.ping()  # the solo worker would run a surviving message before this later ping

    assert len(project_.marks("early")) == 1
    assert result.state == states.PENDING
    assert count_messages(url, schema) == 0
