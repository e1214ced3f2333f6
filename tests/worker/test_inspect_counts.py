"""``inspect stats`` and ``inspect scheduled`` tell what really happened: the pool's child
pids and per-task totals, and ETA tasks the SQLite broker keeps in its file (a countdown, a
retry's delay), which Celery users look for in ``scheduled``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker_support import WAIT, WorkerProject, sqlite_app, wait_until


def test_stats_names_the_prefork_children_and_counts_every_run(
    worker_project: WorkerProject,
) -> None:
    proc = worker_project.spawn(pool="prefork", concurrency=2, options={"max_tasks_per_child": 50})
    worker_project.ping(timeout=30)
    pids = {worker_project.tasks.pid.delay().get(timeout=WAIT) for _ in range(6)}

    [stats] = worker_project.app.control.inspect(timeout=5, limit=1).stats().values()

    assert proc.pid not in stats["pool"]["processes"]
    assert len(stats["pool"]["processes"]) == 2
    assert pids <= set(stats["pool"]["processes"])
    assert stats["pool"]["max-tasks-per-child"] == 50
    assert stats["total"] == {"celery.ping": 1, "crash.pid": 6}


def test_scheduled_lists_eta_tasks_the_sqlite_file_keeps(
    tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    app = sqlite_app("scheduled", tmp_path / "b.sqlite3")

    @app.task(name="sched.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="sched.flaky", bind=True)
    def flaky(self: Any) -> None:
        raise self.retry(countdown=300)

    start_worker(app, pool="threads", concurrency=2)
    later = add.apply_async((1, 2), countdown=600, priority=3)
    retried = flaky.delay()
    wait_until(lambda: retried.state == "RETRY", what="the task to be retried")

    def both_listed() -> list[dict[str, Any]] | None:
        replies = app.control.inspect(timeout=2, limit=1).scheduled() or {}
        entries = [entry for listed in replies.values() for entry in listed]
        return entries if len(entries) == 2 else None

    scheduled = wait_until(both_listed, what="both held tasks in inspect scheduled")
    by_id = {entry["request"]["id"]: entry for entry in scheduled}
    assert set(by_id) == {later.id, retried.id}
    assert by_id[later.id]["request"]["name"] == "sched.add"
    assert by_id[later.id]["request"]["args"] == [1, 2]
    # Celery's timer priority for ETA entries; the message's own is in delivery_info.
    assert by_id[later.id]["priority"] == 6
    assert by_id[later.id]["request"]["delivery_info"]["priority"] == 3
    assert by_id[later.id]["request"]["worker_pid"] is None, "no process runs it yet"
    assert by_id[retried.id]["eta"] < by_id[later.id]["eta"]  # 300 s before 600 s
