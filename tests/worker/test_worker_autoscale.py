"""``--autoscale=MAX,MIN`` on real worker processes: the pool grows while tasks wait and
shrinks back once idle for ``AUTOSCALE_KEEPALIVE`` seconds; the control command moves bounds."""

from __future__ import annotations

from typing import Any

import pytest
from worker_support import WorkerProject, wait_until

from caraway import Celery
from caraway.exceptions import ImproperlyConfigured
from caraway.worker.autoscale import parse_autoscale


def _max_concurrency(project: WorkerProject) -> Any:
    stats = project.app.control.inspect(timeout=5, limit=1).stats() or {}
    (only,) = stats.values()
    return only["pool"]["max-concurrency"]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_the_pool_grows_under_load_and_shrinks_back_when_idle(
    worker_project: WorkerProject, pool: str
) -> None:
    project = worker_project
    project.spawn(pool=pool, options={"autoscale": "3,1"}, AUTOSCALE_KEEPALIVE="0.5")
    project.ping()
    assert _max_concurrency(project) == 1

    results = [project.tasks.hold.delay(f"load-{pool}-{n}") for n in range(3)]
    running = [project.wait_marks(f"load-{pool}-{n}", 1)[0] for n in range(3)]  # all at once

    assert _max_concurrency(project) == 3
    if pool == "prefork":
        assert len({mark["pid"] for mark in running}) == 3  # three children
    for n in range(3):
        project.release(f"load-{pool}-{n}")
    assert [r.get(timeout=10) for r in results] == [f"load-{pool}-{n}" for n in range(3)]
    wait_until(lambda: _max_concurrency(project) == 1, 10.0, "the pool to shrink back")


def test_the_autoscale_command_moves_the_bounds(worker_project: WorkerProject) -> None:
    project = worker_project
    project.spawn(pool="threads", options={"autoscale": "2,1"}, AUTOSCALE_KEEPALIVE="0.5")
    project.ping()

    (reply,) = project.app.control.autoscale(4, 2, reply=True, timeout=5, limit=1) or []

    assert list(reply.values()) == [{"ok": "autoscale now max=4 min=2"}]
    wait_until(lambda: _max_concurrency(project) == 2, 10.0, "the new minimum")


def test_autoscale_values_are_read_as_celery_reads_them() -> None:
    assert parse_autoscale("10,3") == (10, 3)
    assert parse_autoscale("4") == (4, 0)
    assert parse_autoscale((5, 1)) == (5, 1)
    for bad in ("x,1", "2,5", "0", "1,2,3"):
        with pytest.raises(ValueError, match="--autoscale"):
            parse_autoscale(bad)


def test_a_pool_that_cannot_grow_refuses_autoscale() -> None:
    app = Celery("autoscale", broker="memory://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="--autoscale needs a pool that can grow"):
        app.Worker(pool="solo", autoscale="3,1")
    app.close()
