"""A prefork pool child SIGKILLed mid-task, with ``acks_late`` (Redis).

Celery's semantics, as ``docs/worker.md`` says: the task the child ran ends FAILURE
``WorkerLostError`` (its message acked), or, with ``reject_on_worker_lost``, its message
goes back to the queue and the task runs again. Either way the child is replaced, and the
other tasks, running or prefetched, are not affected: none runs twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from fault_servers import PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check
from polling import poll

from caraway import states
from caraway.exceptions import WorkerLostError

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("requeue", [False, True], ids=["worker-lost", "reject-on-worker-lost"])
def test_a_pool_child_killed_mid_task(
    private_redis: PrivateRedis, fault_project: Callable[..., FaultProject], requeue: bool
) -> None:
    project = fault_project(**redis_conf(private_redis, result_backend=f"{private_redis.url}/1"))
    worker = project.spawn("prefork", 2)
    project.wait_ready()
    victim_task = project.tasks.work_requeue if requeue else project.tasks.work
    victim = victim_task.delay(3.0).id
    ids = project.send(40)
    child = poll(lambda: project.ledger.running_now().get(victim), 20, "the victim to start")
    assert child != worker.pid

    killed_at = time.time()
    os.kill(child, signal.SIGKILL)
    fault = (killed_at, time.time())

    recovery, probes = project.resume()
    figures = check(
        project,
        ids + probes,
        fault,
        redis_empty(private_redis),
        f"child-sigkill/{'requeue' if requeue else 'lost'}",
        recovery,
    )
    assert figures.twice == 0, "a task other than the one whose child died ran twice"

    result = project.app.AsyncResult(victim)
    if requeue:
        assert result.get(timeout=20) == victim
        assert project.ledger.starts()[victim] == 2
    else:
        poll(lambda: result.state == states.FAILURE, 20, "the victim to fail")
        assert isinstance(result.result, WorkerLostError), result.result
        assert project.ledger.starts()[victim] == 1
        assert victim not in project.ledger.ended()
    after = {e.pid for e in project.ledger.events() if e.at > fault[1]}
    assert child not in after
    assert len(after - {worker.pid}) == 2, f"the dead child was not replaced: {after}"
