"""A prefork child whose result write fails (the backend is away, retries off) says so
and keeps serving; the task counts as failed, as in Celery, and never runs again.

Before, the error escaped the child, which died; the supervisor then took the task for a
lost worker and tried to store ``WorkerLostError`` for a task that had run.
"""

from __future__ import annotations

from collections.abc import Callable

from fault_servers import PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject
from polling import poll
from services import free_port


def test_a_child_whose_result_store_fails_reports_it_and_lives(
    private_redis: PrivateRedis, fault_project: Callable[..., FaultProject]
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    project = fault_project(
        **redis_conf(private_redis, result_backend=nowhere, result_backend_always_retry=False)
    )
    project.spawn("prefork", 1)
    project.wait_ready()
    ids = project.send(3, "work")

    poll(lambda: project.ledger.ended() >= set(ids), 30, "the tasks to run")
    poll(redis_empty(private_redis), 10, "every message acked")

    log = project.log()
    events = project.ledger.events()
    assert project.ledger.starts() == dict.fromkeys(ids, 1), log  # once each, never again
    assert len({event.pid for event in events}) == 1, f"the child was replaced:\n{log}"
    assert log.count("Could not complete fault.work[") == 3
    assert "WorkerLostError" not in log
    assert "Traceback" not in log
