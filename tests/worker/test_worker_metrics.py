"""``--metrics``: a real worker runs a known mix of tasks, then its ``/metrics`` is fetched over
HTTP and read with prometheus-client's own parser; every count matches what ran."""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from services import delete_redis_prefixed, free_port
from worker_support import (
    WAIT,
    ThreadedWorker,
    WorkerProject,
    redis_project,
    sqlite_app,
    wait_until,
)

from caraway.exceptions import ImproperlyConfigured

#: What the worker's queue is called (the default queue).
QUEUE = "celery"
#: Every sample of a scrape: (sample name, labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    app = sqlite_app("metered", tmp_path_factory.mktemp("metered") / "b.db")
    release = threading.Event()

    @app.task(name="m.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="m.fail")
    def fail() -> None:
        raise ValueError("no")

    @app.task(name="m.flaky", bind=True, default_retry_delay=0)
    def flaky(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry()
        return "second time lucky"

    @app.task(name="m.hold")
    def hold() -> None:
        release.wait(WAIT)

    @app.task(name="m.later")
    def later() -> None:
        return None

    # One slot and a window of two: one task runs, one waits reserved, the rest stay queued.
    threaded = ThreadedWorker(
        app, hostname="metered@test", concurrency=1, prefetch_multiplier=2, health_port=0,
        metrics=True,
    ).start()  # fmt: skip
    worker = threaded.worker
    assert worker.health is not None
    yield SimpleNamespace(
        app=app, add=add, fail=fail, flaky=flaky, hold=hold, later=later, release=release,
        port=worker.health.port,
    )  # fmt: skip
    release.set()
    threaded.stop()
    app.close()


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(port: int, done: Callable[[Samples], bool]) -> Samples:
    """``/metrics`` once ``done`` holds for it."""

    def scraped() -> Samples | None:
        samples = scrape(port)
        return samples if done(samples) else None

    found: Samples = wait_until(scraped, what="/metrics to show it")
    return found


def succeeded(samples: Samples, task: str) -> float:
    """SUCCESS counts of ``task``, on any worker."""
    return sum(
        count for (name, labels), count in samples.items()
        if name == "caraway_tasks_total" and {("task", task), ("state", "SUCCESS")} <= labels
    )  # fmt: skip


def finished_runs(samples: Samples, worker: str) -> float:
    """Runs counted as ended, whatever their outcome."""
    return sum(
        count for (name, labels), count in samples.items()
        if name == "caraway_task_runtime_seconds_count" and ("worker", worker) in labels
    )  # fmt: skip


def test_the_counts_match_a_known_mix_of_tasks(metered: SimpleNamespace) -> None:
    results = [metered.add.delay(i, i) for i in range(5)]
    failures = [metered.fail.delay() for _ in range(2)]
    retried = metered.flaky.delay()
    metered.app.send_task("m.nobody_knows_me")

    assert [r.get(timeout=WAIT) for r in results] == [0, 2, 4, 6, 8]
    for failure in failures:
        with pytest.raises(ValueError, match="no"):
            failure.get(timeout=WAIT)
    assert retried.get(timeout=WAIT) == "second time lucky"
    me = "metered@test"
    # A result is stored inside the run; the worker counts the run just after it.
    samples = scrape_until(
        metered.port,
        lambda s: (
            value(s, "caraway_dead_letters_total", worker=me) == 1
            and finished_runs(s, me) == 5 + 2 + 2
        ),
    )

    def tasks(task: str, state: str) -> float:
        return value(samples, "caraway_tasks_total", worker=me, task=task, state=state)

    assert [tasks("m.add", state) for state in ("RECEIVED", "STARTED", "SUCCESS")] == [5, 5, 5]
    assert [tasks("m.fail", state) for state in ("RECEIVED", "STARTED", "FAILURE")] == [2, 2, 2]
    assert tasks("m.fail", "SUCCESS") == 0
    flaky = [tasks("m.flaky", state) for state in ("RECEIVED", "STARTED", "RETRY", "SUCCESS")]
    assert flaky == [2, 2, 1, 1]
    for task, runs in (("m.add", 5), ("m.fail", 2), ("m.flaky", 2)):
        for histogram in ("caraway_task_runtime_seconds", "caraway_task_queue_wait_seconds"):
            assert value(samples, f"{histogram}_count", worker=me, task=task) == runs
            assert value(samples, f"{histogram}_bucket", worker=me, task=task, le="+Inf") == runs
            assert value(samples, f"{histogram}_sum", worker=me, task=task) >= 0
    assert value(samples, "caraway_worker_online", worker=me) == 1
    assert value(samples, "caraway_worker_prefetch_limit", worker=me) == 2
    assert value(samples, "caraway_queue_depth", queue=QUEUE) == 0
    assert ("process_cpu_seconds_total", frozenset()) in samples  # the process' own metrics


def test_the_gauges_show_running_reserved_and_queued_tasks(metered: SimpleNamespace) -> None:
    me = "metered@test"
    held = metered.hold.delay()
    wait_until(
        lambda: value(scrape(metered.port), "caraway_worker_active_tasks", worker=me) == 1,
        what="the held task to run",
    )
    waiting = [metered.later.delay() for _ in range(3)]

    # A window of two reserved messages (the running task was acked as it started).
    samples = wait_until(
        lambda: (
            (s := scrape(metered.port))
            and value(s, "caraway_worker_reserved_tasks", worker=me) == 2
            and s
        ),
        what="two tasks reserved",
    )

    assert value(samples, "caraway_worker_active_tasks", worker=me) == 1
    assert value(samples, "caraway_queue_depth", queue=QUEUE) == 1
    metered.release.set()
    held.get(timeout=WAIT)
    for result in waiting:
        result.get(timeout=WAIT)
    samples = scrape_until(
        metered.port,
        lambda s: value(s, "caraway_tasks_total", worker=me, task="m.later", state="SUCCESS") == 3,
    )
    assert value(samples, "caraway_worker_active_tasks", worker=me) == 0
    assert value(samples, "caraway_worker_reserved_tasks", worker=me) == 0
    assert value(samples, "caraway_queue_depth", queue=QUEUE) == 0


def test_metrics_without_a_health_port_is_refused(tmp_path: Any) -> None:
    app = sqlite_app("no-port", tmp_path / "b.db")
    try:
        with pytest.raises(ImproperlyConfigured, match="--health-port"):
            app.Worker(metrics=True)
    finally:
        app.close()


def test_a_prefork_worker_counts_what_its_children_ran(worker_project: WorkerProject) -> None:
    """The counts are kept in the worker process, whatever runs the tasks."""
    project = worker_project
    port = free_port()
    project.spawn(pool="prefork", concurrency=2, options={"health_port": port, "metrics": True})
    project.ping()
    pids = [project.tasks.pid.delay() for _ in range(4)]
    for result in pids:
        result.get(timeout=WAIT)

    samples = scrape_until(port, lambda s: succeeded(s, "crash.pid") == 4)

    assert succeeded(samples, "celery.ping") == 1
    worker = dict(next(labels for name, labels in samples if name == "caraway_worker_online"))
    assert value(samples, "caraway_worker_online", **worker) == 1
    assert value(samples, "caraway_worker_prefetch_limit", **worker) == 2 * 4


def test_a_prefork_worker_on_redis_counts_what_its_children_fetched_and_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis the children fetch and ack for themselves: their reports still reach the
    worker's counts."""
    project = redis_project(tmp_path, monkeypatch)
    try:
        port = free_port()
        options = {"health_port": port, "metrics": True}
        project.spawn(pool="prefork", concurrency=2, options=options)
        project.ping()
        for result in [project.tasks.pid.delay() for _ in range(4)]:
            result.get(timeout=WAIT)

        samples = scrape_until(port, lambda s: succeeded(s, "crash.pid") == 4)

        assert succeeded(samples, "celery.ping") == 1
    finally:
        project.close()
        project.app.close()
        delete_redis_prefixed(os.environ["PREFORK_PREFIX"])
