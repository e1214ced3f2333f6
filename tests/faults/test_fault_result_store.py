"""A prefork child whose result write fails (the backend is away) says so and keeps serving.

Before, the error escaped the child, which died; the supervisor then took the task for a
lost worker and tried to store ``WorkerLostError`` for a task that had run.
"""

from __future__ import annotations

from collections.abc import Callable

from fault_servers import PrivateRedis, free_port, redis_conf
from fault_workers import FaultProject
from polling import poll


def test_a_child_whose_result_store_fails_reports_it_and_lives(
    private_redis: PrivateRedis, fault_project: Callable[..., FaultProject]
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    project = fault_project(**redis_conf(private_redis, result_backend=nowhere))
    project.spawn("prefork", 1)
    project.wait_ready()
    project.send(2, "work")

    # acks_late: each failed store gives the message back, so the tasks run again and again.
    poll(lambda: len(project.ledger.events()) >= 6, 30, "three runs of the tasks")

    log = project.log()
    pids = {event.pid for event in project.ledger.events()}
    assert len(pids) == 1, f"the child was replaced: {pids}\n{log}"
    assert "Could not complete fault.work[" in log
    assert "its message goes back to the queue" in log
    assert "WorkerLostError" not in log
    assert "Traceback" not in log
