"""Tasks run on a real worker and their results are stored: memory and SQLite, solo and threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, make_app

from caraway import states

COMBINATIONS = [(broker, pool) for broker in ("memory", "sqlite") for pool in ("solo", "threads")]


@pytest.fixture(scope="module", params=COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """One worker per broker/pool combination, shared by the tests of this module."""
    broker, pool = request.param
    path = tmp_path_factory.mktemp("basics") / "b.sqlite3"
    app = make_app(broker, f"basics-{broker}-{pool}", path)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def boom() -> None:
        raise ValueError("boom")

    @app.task
    def where() -> str:
        return threading.current_thread().name

    worker = ThreadedWorker(app, pool=pool, concurrency=2).start()
    yield SimpleNamespace(app=app, add=add, boom=boom, where=where, pool=pool, broker=broker)
    worker.stop()


def test_results_are_stored_and_messages_acked(served: SimpleNamespace) -> None:
    results = [served.add.delay(n, n) for n in range(20)]

    assert [r.get(timeout=WAIT) for r in results] == [2 * n for n in range(20)]
    # A fresh handle reads the stored result, not a cached one.
    stored = served.app.AsyncResult(results[7].id)
    assert stored.state == states.SUCCESS
    assert stored.result == 14
    assert served.app.broker.size("celery") == 0


def test_failures_are_stored_with_the_exception(served: SimpleNamespace) -> None:
    result = served.boom.delay()

    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert "ValueError" in (result.traceback or "")


def test_the_pool_decides_which_thread_runs_tasks(served: SimpleNamespace) -> None:
    names = {served.where.delay().get(timeout=WAIT) for _ in range(6)}

    if served.pool == "solo":
        assert names == {"test-worker"}  # the consumer's own thread
    else:
        assert names <= {"caraway-pool-0", "caraway-pool-1"}


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_concurrency_n_runs_n_tasks_at_once(broker: str, tmp_path: Path, start_worker: Any) -> None:
    """Six tasks meet three at a time at a barrier: only possible if three run at once."""
    app = make_app(broker, f"concurrency-{broker}", tmp_path / "b.sqlite3")
    barrier = threading.Barrier(3, timeout=WAIT)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @app.task
    def meet(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            barrier.wait()  # raises BrokenBarrierError (task FAILURE) unless 3 run together
        finally:
            with lock:
                running[0] -= 1
        return n

    start_worker(app, pool="threads", concurrency=3)
    results = [meet.delay(n) for n in range(6)]

    assert [r.get(timeout=WAIT) for r in results] == list(range(6))
    assert peak[0] == 3
