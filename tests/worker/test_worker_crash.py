"""Worker processes that die or are stopped, and what happens to their messages.

Each test runs workers as subprocesses on a SQLite broker with a 2 s lease
(``visibility_timeout``); the tasks leave marker files (see ``worker_support.TASKS_SOURCE``).
"""

from __future__ import annotations

import signal
import time

import pytest
from worker_support import WAIT, WorkerProject, wait_until

from caraway import states


def test_acks_late_task_killed_with_sigkill_runs_again_on_the_next_worker(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    first = project.spawn(pool="threads", concurrency=2)
    project.ping()
    result = project.tasks.late.delay("late")
    project.wait_marks("late", 1)  # the task is running (and blocks) in the first worker

    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    project.release("late")
    project.spawn(pool="solo")

    # The new worker reclaims the dead process's lease at start (without waiting for it to
    # expire) and runs the task again.
    assert result.get(timeout=WAIT) == 2
    assert "Restored 1 message(s) left by a worker that died" in project.log(1)
    assert result.state == states.SUCCESS
    runs = project.marks("late")
    assert len(runs) == 2
    assert runs[0]["pid"] == first.pid
    assert runs[1]["pid"] != first.pid
    assert [run["redelivered"] for run in runs] == [False, True]
    # acks_late: the result is stored before the message is acknowledged.
    wait_until(lambda: project.messages_in_file() == 0, what="the rerun's ack")


def test_early_acked_task_killed_with_sigkill_is_not_run_again(
    worker_project: WorkerProject,
) -> None:
    """Celery semantics: the message was acknowledged when the task started, so it is lost."""
    project = worker_project
    first = project.spawn(pool="threads", concurrency=2)
    project.ping()
    result = project.tasks.early.delay("early")
    project.wait_marks("early", 1)

    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    project.release("early")
    project.spawn(pool="solo")
    # The solo worker would run a surviving message before this later ping.
    project.ping()

    assert len(project.marks("early")) == 1
    assert result.state == states.PENDING
    assert project.messages_in_file() == 0


def test_countdown_task_survives_a_restart_and_runs_once_after_its_eta(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    first = project.spawn(pool="solo")
    project.ping()
    sent_at = time.time()
    result = project.tasks.stamp.apply_async(("eta",), countdown=3)
    eta = sent_at + 3

    assert project.stop(first, signal.SIGTERM) == 0
    assert time.time() < eta, "the first worker must stop before the task is due"
    assert project.app.broker.size("celery") == 1  # held in the file, not by a worker
    project.spawn(pool="solo")

    ran_at = result.get(timeout=WAIT)
    assert ran_at >= eta
    assert len(project.marks("eta")) == 1
    assert project.messages_in_file() == 0


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_sigterm_finishes_the_running_task_and_gives_back_prefetched_messages(
    worker_project: WorkerProject, pool: str
) -> None:
    project = worker_project
    running = project.tasks.hold.delay("running")
    waiting = [project.tasks.stamp.delay(f"waiting-{n}") for n in range(3)]
    # Started after publishing: its first fetch fills the whole window (1 slot x 4).
    proc = project.spawn(pool=pool, concurrency=1)
    project.wait_marks("running", 1)
    # Leased messages are not counted: at 0, all three are prefetched by the worker.
    wait_until(lambda: project.app.broker.size("celery") == 0, what="the prefetch")

    proc.send_signal(signal.SIGTERM)
    project.release("running")
    assert proc.wait(WAIT) == 0

    assert running.get(timeout=WAIT) == "running"
    assert [r.state for r in waiting] == [states.PENDING] * 3
    assert all(project.marks(f"waiting-{n}") == [] for n in range(3))
    assert project.app.broker.size("celery") == 3


def test_a_live_worker_renews_its_lease_past_the_visibility_timeout(
    worker_project: WorkerProject,
) -> None:
    """A late-ack task running longer than the 2 s lease is not handed out again."""
    project = worker_project
    project.spawn(pool="threads", concurrency=2)
    result = project.tasks.late.delay("long")
    project.wait_marks("long", 1)
    first_lease_end = project.lease_until(result.id)

    # The subject is time passing: outlive the first lease by a margin.
    time.sleep(max(0.0, first_lease_end + 0.5 - time.time()))

    assert project.lease_until(result.id) > time.time()  # renewed, still ours
    assert len(project.marks("long")) == 1  # not redelivered, to this worker or another
    project.release("long")
    assert result.get(timeout=WAIT) == 1
    # The result is stored before the late ack: the message leaves the file just after.
    wait_until(lambda: project.messages_in_file() == 0, what="the late ack")


def test_sigterm_while_booting_stops_the_worker_before_it_takes_anything(
    worker_project: WorkerProject,
) -> None:
    """The signal arrives (from a ``worker_process_init`` receiver) before consuming starts."""
    project = worker_project
    result = project.tasks.stamp.delay("never")

    proc = project.spawn(pool="solo", CRASHPROJ_TERM_DURING_BOOT="1")

    assert proc.wait(WAIT) == 0
    assert project.marks("never") == []
    assert result.state == states.PENDING
    assert project.app.broker.size("celery") == 1
