"""``-P prefork`` in real worker processes: children run tasks, die, time out and retire.

Each test runs twice: on SQLite, where the supervisor hands each job to a child, and on
Redis with ``worker_prefork_children_fetch``, where children fetch, run and ack for
themselves (``settle_anywhere``) and the supervisor watches them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import delete_redis_prefixed
from worker_support import _SQLITE_APP, TASKS_SOURCE, WAIT, WorkerProject, redis_project, wait_until

from caraway import states
from caraway.events import EventReceiver
from caraway.exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError


@contextlib.contextmanager
def crash_project(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProject]:
    """The crash-test project on SQLite (hand-off) or on Redis (children fetch)."""
    project = (
        WorkerProject(tmp_path) if broker == "sqlite" else redis_project(tmp_path, monkeypatch)
    )
    try:
        yield project
    finally:
        project.close()
        project.app.close()
        if broker == "redis":
            delete_redis_prefixed(os.environ["PREFORK_PREFIX"])


@pytest.fixture(params=["sqlite", "redis"])
def worker_project(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProject]:
    with crash_project(request.param, tmp_path, monkeypatch) as project:
        yield project


@pytest.fixture
def fetching_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerProject]:
    """Only on Redis: its children fetch for themselves."""
    with crash_project("redis", tmp_path, monkeypatch) as project:
        yield project


def unsettled(project: WorkerProject) -> int:
    """Messages the broker still holds: queued, or delivered and not settled."""
    broker = project.app.broker
    if not broker.capabilities.settle_anywhere:
        return project.messages_in_file()
    client = broker.client  # type: ignore[attr-defined]
    return int(client.hlen(broker.unacked)) + broker.size("celery")  # type: ignore[attr-defined]


def settled(project: WorkerProject) -> None:
    """Results are stored by the child before the message is acked: wait for the ack."""
    wait_until(lambda: unsettled(project) == 0, what="every message settled")


def pids_of(project: WorkerProject, count: int) -> set[int]:
    """The child pids that ran ``count`` quick tasks."""
    return {r.get(timeout=WAIT) for r in [project.tasks.pid.delay() for _ in range(count)]}


def test_children_run_sync_and_async_tasks(worker_project: WorkerProject) -> None:
    project = worker_project
    supervisor = project.spawn(pool="prefork", concurrency=2)
    project.ping()

    children = pids_of(project, 8)
    nap = project.tasks.nap.delay(0.01).get(timeout=WAIT)

    assert supervisor.pid not in children
    assert 1 <= len(children) <= 2
    assert nap[0] in children | pids_of(project, 8)
    assert project.stop(supervisor, signal.SIGTERM) == 0


def test_hard_limit_kills_and_replaces_the_child_soft_limit_is_caught(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    [before] = pids_of(project, 1)

    started = time.monotonic()
    result = project.tasks.spin.apply_async((30,), time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=WAIT)

    assert time.monotonic() - started < 5
    assert result.state == states.FAILURE
    assert pids_of(project, 1) != {before}  # killed, and a new child took its slot
    assert project.tasks.soft.delay("soft").get(timeout=WAIT) == "cleaned up"
    assert project.marks("soft")[0]["cleaned"] is True
    # An async body: SIGUSR1 becomes SoftTimeLimitExceeded at its await.
    assert project.tasks.soft_async.delay("soft-async").get(timeout=WAIT) == "cleaned up"
    assert project.marks("soft-async")[0]["cleaned"] is True
    nap = project.tasks.nap.apply_async((30,), time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        nap.get(timeout=WAIT)
    settled(project)


def test_child_killed_mid_task_fails_it_with_worker_lost_error(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    result = project.tasks.late.delay("lost")
    [run] = project.wait_marks("lost", 1)

    os.kill(run["pid"], signal.SIGKILL)

    with pytest.raises(WorkerLostError, match="SIGKILL"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert len(project.marks("lost")) == 1  # acked, not run again
    settled(project)
    assert pids_of(project, 1) != {run["pid"]}


def test_child_killed_mid_task_gives_it_back_with_reject_on_worker_lost(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    result = project.tasks.late_requeue.delay("requeued")
    [run] = project.wait_marks("requeued", 1)

    os.kill(run["pid"], signal.SIGKILL)

    assert result.get(timeout=WAIT) == 2  # the second run does not block
    runs = project.marks("requeued")
    assert len(runs) == 2
    assert runs[1]["pid"] != run["pid"]  # ran again, in the child that replaced the dead one
    settled(project)


@pytest.mark.parametrize(
    "options", [{"max_tasks_per_child": 1}, {"max_memory_per_child": 1}], ids=["tasks", "memory"]
)
def test_children_retire_after_their_limit(
    worker_project: WorkerProject, options: dict[str, Any]
) -> None:
    project = worker_project
    project.spawn(pool="prefork", concurrency=1, options=options)
    project.ping()

    ran_in = [project.tasks.pid.delay().get(timeout=WAIT) for _ in range(3)]

    assert len(set(ran_in)) == 3  # one task per child


def test_revoke_with_terminate_signals_the_child_running_the_task(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    result = project.tasks.hold.delay("terminated")
    [run] = project.wait_marks("terminated", 1)

    project.app.control.revoke(result.id, terminate=True)

    wait_until(lambda: result.state == states.REVOKED, what="REVOKED")
    assert isinstance(result.result, TaskRevokedError)
    assert pids_of(project, 1) != {run["pid"]}
    settled(project)


def test_revoke_terminate_by_remote_control_signals_the_child_with_the_signal_asked(
    worker_project: WorkerProject,
) -> None:
    """Through the worker's control mailbox only (a destination: no broker record)."""
    project = worker_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    (hostname,) = project.app.control.inspect(timeout=5, limit=1).ping() or {}
    result = project.tasks.hold.delay("killed")
    [run] = project.wait_marks("killed", 1)

    replies = project.app.control.revoke(
        result.id, destination=[hostname], terminate=True, signal="SIGKILL", reply=True,
        timeout=5,
    )  # fmt: skip

    assert replies == [{hostname: {"ok": f"terminate: {result.id}"}}]
    wait_until(lambda: result.state == states.REVOKED, what="REVOKED")
    assert pids_of(project, 1) != {run["pid"]}
    settled(project)


def test_task_events_and_inspect_active_come_from_the_supervisor(
    worker_project: WorkerProject,
) -> None:
    """task_prerun/postrun fire in the child: events and ``active`` must not depend on them."""
    project = worker_project
    project.spawn(pool="prefork", concurrency=1, options={"task_events": True})
    project.ping()
    with EventReceiver(project.app) as receiver:
        held = project.tasks.hold.delay("watched")
        project.wait_marks("watched", 1)
        (active,) = (project.app.control.inspect(timeout=5, limit=1).active() or {}).values()
        project.release("watched")
        kinds = []
        for event in receiver.itercapture(timeout=WAIT):
            if event.get("uuid") == held.id:
                kinds.append(event["type"])
            if kinds[-1:] == ["task-succeeded"]:
                break

    assert kinds == ["task-received", "task-started", "task-succeeded"]
    assert [entry["id"] for entry in active] == [held.id]
    assert active[0]["time_start"] is not None
    settled(project)


def test_cold_shutdown_kills_the_children_and_gives_late_ack_messages_back(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    supervisor = project.spawn(pool="prefork", concurrency=1)
    project.ping()
    result = project.tasks.late.delay("cold")
    [run] = project.wait_marks("cold", 1)

    assert project.stop(supervisor, signal.SIGQUIT) == 1  # Celery's cold shutdown exit code

    assert project.app.broker.size("celery") == 1  # back in the queue, not waiting on a lease
    assert result.state == states.PENDING  # not failed with WorkerLostError
    with pytest.raises(ProcessLookupError):
        os.kill(run["pid"], 0)


def test_ctrl_c_twice_requeues_the_running_late_ack_tasks_quietly(
    worker_project: WorkerProject,
) -> None:
    """Celery's cold shutdown: one line per message given back, no traceback, exit code 1."""
    project = worker_project
    supervisor = project.spawn(pool="prefork", concurrency=2)
    project.ping()
    running = [project.tasks.late.delay(f"cold-{n}") for n in range(2)]
    for n in range(2):
        project.wait_marks(f"cold-{n}", 1)

    supervisor.send_signal(signal.SIGINT)
    wait_until(lambda: "warm shutdown" in project.log(0), what="the warm shutdown")
    supervisor.send_signal(signal.SIGINT)

    assert supervisor.wait(WAIT) == 1
    log = project.log(0)
    assert "Traceback" not in log
    assert "stopped (cold shutdown)" in log
    requeued = [line for line in log.splitlines() if "requeued" in line.lower()]
    assert sorted(result.id in line for result in running for line in requeued).count(True) == 2
    assert len(requeued) == 2
    assert project.app.broker.size("celery") == 2  # back at once, no lease to wait out
    assert [result.state for result in running] == [states.PENDING] * 2


def test_messages_a_killed_child_fetched_and_did_not_start_go_back_at_once(
    fetching_project: WorkerProject,
) -> None:
    """The child fetched them itself; the supervisor gives them back when it dies (from the
    child's reports and its fetch receipt), not after the visibility timeout."""
    project = fetching_project
    project.spawn(pool="prefork", concurrency=1)
    project.ping()
    held = project.tasks.hold.delay("prefetched")
    [run] = project.wait_marks("prefetched", 1)
    waiting = [project.tasks.pid.delay() for _ in range(2)]
    wait_until(
        lambda: (
            len((project.app.control.inspect(timeout=2).reserved() or {"": []}).popitem()[1]) == 2
        ),
        what="both tasks prefetched by the child",
    )

    os.kill(run["pid"], signal.SIGKILL)

    with pytest.raises(WorkerLostError):
        held.get(timeout=WAIT)
    ran_in = {result.get(timeout=WAIT) for result in waiting}
    assert run["pid"] not in ran_in  # run by the child that replaced it
    assert "Gave back 2 message(s) the child" in project.log(0)
    settled(project)


def test_children_fetch_is_refused_where_the_broker_cannot_let_them(tmp_path: Path) -> None:
    """On SQLite only the supervisor's connection may settle a delivery: the worker stops at
    boot, naming the setting, instead of quietly handing jobs over as if it were unset."""
    asked = _SQLITE_APP + "app.conf.worker_prefork_children_fetch = True\n"
    project = WorkerProject(tmp_path, TASKS_SOURCE.replace(_SQLITE_APP, asked))
    try:
        proc = project.spawn(pool="prefork", concurrency=1)
        assert proc.wait(WAIT) != 0
        assert "worker_prefork_children_fetch needs a broker" in project.log(0)
    finally:
        project.close()
        project.app.close()
