"""The worker's main process SIGKILLed under load, with ``acks_late`` (Redis, SQLite,
PostgreSQL).

Nothing runs the worker's shutdown: the messages it held (running and prefetched) stay
leased until their lease (``visibility_timeout``) runs out, then come back to a new
worker. Only the tasks that were running at the kill may run twice.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from fault_servers import LEASE, PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check
from polling import poll
from postgresql_support import count_messages, postgresql_schema

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def kill_worker(project: FaultProject) -> tuple[float, float]:
    """SIGKILL the main process; the fault lasts until every process that ran a task
    (prefork children die with it) is gone. Returns that window."""
    proc = project.procs[-1][0]
    runners = set(project.ledger.running_now().values())
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    poll(lambda: all(gone(pid) for pid in runners), 10, "the pool children to die")
    return killed_at, time.time()


def run_kill_story(project: FaultProject, pool: str, empty: Callable[[], bool]) -> None:
    project.spawn(pool, 2)
    project.wait_ready()
    ids = project.send(50)
    project.wait_ended(8)
    fault = kill_worker(project)

    project.spawn(pool, 2)
    project.wait_ready()
    recovery, probes = project.resume()
    broker = project.app.conf.broker_url.split(":")[0]
    check(project, ids + probes, fault, empty, f"worker-sigkill/{broker}/{pool}", recovery)


def test_the_worker_killed_on_redis(
    private_redis: PrivateRedis, fault_project: Callable[..., FaultProject]
) -> None:
    run_kill_story(
        fault_project(**redis_conf(private_redis)), "prefork", redis_empty(private_redis)
    )


def test_the_worker_killed_on_sqlite(
    tmp_path: Path, fault_project: Callable[..., FaultProject]
) -> None:
    path = tmp_path / "broker.sqlite3"
    project = fault_project(
        broker_url=f"sqlite:///{path}", broker_transport_options={"visibility_timeout": LEASE}
    )

    def empty() -> bool:
        with closing(sqlite3.connect(path)) as conn:
            return conn.execute("SELECT count(*) FROM caraway_messages").fetchone()[0] == 0

    run_kill_story(project, "threads", empty)


def test_the_worker_killed_on_postgresql(fault_project: Callable[..., FaultProject]) -> None:
    """Prefork: the children inherit the parent's connections and must never use them."""
    with postgresql_schema("fkill") as (url, schema):
        project = fault_project(
            broker_url=url,
            broker_transport_options={"schema": schema, "visibility_timeout": LEASE},
        )
        run_kill_story(project, "prefork", lambda: count_messages(url, schema) == 0)
