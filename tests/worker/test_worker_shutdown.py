"""SIGTERM with work in hand: nothing prefetched waits for a lease, nothing runs twice."""

from __future__ import annotations

import signal
import time

import pytest
from worker_support import WAIT, WorkerProject, wait_until

from caraway import states
from caraway.calling import send_batch


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_warm_shutdown_with_2_running_and_50_prefetched_late_ack_tasks(
    worker_project: WorkerProject, pool: str
) -> None:
    project = worker_project
    running = [project.tasks.late.delay(f"running-{n}") for n in range(2)]
    waiting = send_batch(project.app, [project.tasks.late_stamp.s(f"w-{n}") for n in range(50)])
    # A window of 2 slots x 26 holds all 52: two run (and block), fifty wait in the worker.
    first = project.spawn(pool=pool, concurrency=2, options={"prefetch_multiplier": 26})
    project.wait_marks("running-0", 1)
    project.wait_marks("running-1", 1)
    wait_until(lambda: project.app.broker.size("celery") == 0, what="the prefetch")

    first.send_signal(signal.SIGTERM)
    # Given back at once, before the running tasks end: no visibility timeout to wait out.
    wait_until(lambda: project.app.broker.size("celery") == 50, what="the give-back")
    project.release("running-0")
    project.release("running-1")
    assert first.wait(WAIT) == 0
    assert [r.get(timeout=WAIT) for r in running] == [1, 1]
    assert all(r.state == states.PENDING for r in waiting)

    project.spawn(pool=pool, concurrency=2)
    assert [r.get(timeout=WAIT) for r in waiting] == [f"w-{n}" for n in range(50)]
    for n in range(50):
        assert len(project.marks(f"w-{n}")) == 1, f"w-{n} ran more than once"
    assert all(len(project.marks(f"running-{n}")) == 1 for n in range(2))
    wait_until(lambda: project.messages_in_file() == 0, what="every message acked")


def test_a_second_sigterm_turns_the_warm_shutdown_cold(worker_project: WorkerProject) -> None:
    project = worker_project
    first = project.spawn(pool="threads", concurrency=2)
    result = project.tasks.late.delay("stuck")
    project.wait_marks("stuck", 1)

    first.send_signal(signal.SIGTERM)
    wait_until(lambda: "warm shutdown" in project.log(0), what="the warm shutdown")
    first.send_signal(signal.SIGTERM)

    assert first.wait(WAIT) == 1  # cold: Celery's exit code; the task still blocks, unwaited
    assert "Second SIGTERM: cold shutdown" in project.log(0)
    assert result.state == states.PENDING
    project.release("stuck")
    project.spawn(pool="solo")  # takes back the late-ack message the dead worker held
    assert result.get(timeout=WAIT) == 2
    assert len(project.marks("stuck")) == 2


def test_soft_shutdown_gives_running_tasks_time_before_the_cold_one(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    proc = project.spawn(pool="threads", concurrency=2, options={"soft_shutdown_timeout": 5.0})
    result = project.tasks.late.delay("soft-stop")
    project.wait_marks("soft-stop", 1)

    proc.send_signal(signal.SIGQUIT)
    wait_until(lambda: "Soft shutdown" in project.log(0), what="the soft shutdown")
    project.release("soft-stop")

    assert proc.wait(WAIT) == 1  # a cold shutdown still, however gentle
    assert result.get(timeout=WAIT) == 1  # finished within the soft shutdown, ran once
    wait_until(lambda: project.messages_in_file() == 0, what="the ack")


def test_remapped_sigterm_drains_for_the_soft_timeout_then_gives_late_work_back(
    worker_project: WorkerProject,
) -> None:
    """The Kubernetes recipe: REMAP_SIGTERM=SIGQUIT and a soft shutdown below the grace period."""
    project = worker_project
    proc = project.spawn(
        pool="prefork", concurrency=1, options={"soft_shutdown_timeout": 0.5},
        REMAP_SIGTERM="SIGQUIT",
    )  # fmt: skip
    result = project.tasks.late.delay("too-long")
    project.wait_marks("too-long", 1)

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)

    assert proc.wait(WAIT) == 1  # cold, as Celery's remapped SIGTERM
    assert 0.4 < time.monotonic() - started < 5
    assert project.app.broker.size("celery") == 1  # back in the queue at once
    assert result.state == states.PENDING
