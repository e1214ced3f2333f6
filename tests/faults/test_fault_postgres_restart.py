"""PostgreSQL restarted (2 s down) while tasks store their results (SQL result backend).

The cluster is the test's own (``initdb`` on a free port). Every task must end with its
result stored, the worker must not hang, and a task may run again only if it was running
while the database was away (its result could not be written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from fault_servers import PrivatePostgres, PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check
from polling import poll

from caraway.engines.sql.backend import sqlalchemy_url

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)

DOWN_FOR = 2.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def states(url: str) -> Callable[[], dict[str, str]]:
    """Task id -> state, as stored in the (default) task table."""
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)

    def read() -> dict[str, str]:
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT task_id, status FROM celery_taskmeta"))
                return {task_id: status for task_id, status in rows}
        except sa.exc.OperationalError:
            return {}

    return read


@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 4), ("prefork", 2)])
def test_postgres_restarted_under_the_sql_result_backend(
    postgres: PrivatePostgres,
    private_redis: PrivateRedis,
    fault_project: Callable[..., FaultProject],
    pool: str,
    concurrency: int,
) -> None:
    """A result write that finds the database away waits for it (caraway's default
    ``result_backend_always_retry``): no result is lost and no task runs twice."""
    project = fault_project(
        **redis_conf(
            private_redis,
            result_backend=postgres.url,
            result_backend_max_sleep_between_retries_ms=500,
        )
    )
    project.spawn(pool, concurrency)
    project.wait_ready()
    ids = project.send(60)
    project.wait_ended(10)

    stopped_at = time.time()
    postgres.stop()
    time.sleep(DOWN_FOR)
    postgres.start()
    # Retried writes wait out the outage: the fault is only the instant of the stop.
    fault = (stopped_at, stopped_at)

    recovery, probes = project.resume()
    check(
        project,
        ids + probes,
        fault,
        redis_empty(private_redis),
        f"postgres-restart/{pool}",
        recovery,
    )
    stored = states(postgres.url)
    try:
        poll(lambda: all(stored().get(i) == "SUCCESS" for i in ids + probes), 20, "results")
    except AssertionError:
        found = stored()
        wrong = {i: found.get(i, "missing") for i in ids + probes if found.get(i) != "SUCCESS"}
        raise AssertionError(f"{len(wrong)} task(s) ran but have no SUCCESS: {wrong}") from None
