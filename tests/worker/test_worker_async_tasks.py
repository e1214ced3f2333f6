"""``async def`` tasks on every in-process pool, and eagerly: values, loops, retries, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, memory_app, wait_until

from caraway import signals, states
from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def define_tasks(app: Any) -> SimpleNamespace:
    progress_seen = threading.Event()

    @app.task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    @app.task
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    @app.task(bind=True, max_retries=3)
    async def flaky(self: Any, failures: int) -> int:
        await asyncio.sleep(0)
        if self.request.retries < failures:
            raise self.retry(countdown=0.01)
        return int(self.request.retries)

    @app.task(autoretry_for=(ConnectionError,), max_retries=2, default_retry_delay=0.01, bind=True)
    async def unreachable(self: Any) -> int:
        await asyncio.sleep(0)
        if self.request.retries < 2:
            raise ConnectionError("down")
        return int(self.request.retries)

    @app.task
    async def observed() -> str:
        return "observed"

    seen: list[tuple[str, Any]] = []

    async def on_prerun(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
        await asyncio.sleep(0)
        seen.append(("prerun", task_id))

    async def on_postrun(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
        await asyncio.sleep(0)
        seen.append(("postrun", kwargs["retval"]))

    signals.task_prerun.connect(on_prerun, sender=observed)
    signals.task_postrun.connect(on_postrun, sender=observed)

    @app.task(bind=True)
    async def reporting(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1})
        while not progress_seen.is_set():
            await asyncio.sleep(0.01)
        return "reported"

    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "app"})


def define_limited_tasks(app: Any) -> SimpleNamespace:
    @app.task(soft_time_limit=0.2)
    async def soft() -> str:
        try:
            await asyncio.sleep(WAIT)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0.01)  # the body can still await while it cleans up
            return "cleaned up"
        return "never interrupted"

    @app.task(time_limit=0.2)
    async def hard() -> str:
        await asyncio.sleep(WAIT)
        return "never interrupted"

    @app.task(soft_time_limit=0.2, time_limit=0.5)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(WAIT)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(WAIT)
        return "never interrupted"

    @app.task(time_limit=0.3)
    def sync_spin() -> str:
        spin(WAIT)
        return "never interrupted"

    @app.task
    def sync_where() -> str:
        return threading.current_thread().name

    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "app"})


@pytest.fixture(scope="module", params=["solo", "threads", "asyncio"])
def served(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    app = memory_app(f"async-{request.param}")
    tasks = SimpleNamespace(**vars(define_tasks(app)), **vars(define_limited_tasks(app)))
    concurrency = 1 if request.param == "threads" else 4  # one thread: one loop to compare
    worker = ThreadedWorker(app, pool=request.param, concurrency=concurrency).start()
    yield SimpleNamespace(app=app, pool=request.param, **vars(tasks))
    worker.stop()


def test_async_task_returns_its_value(served: SimpleNamespace) -> None:
    results = [served.add.delay(n, n) for n in range(5)]

    assert [r.get(timeout=WAIT) for r in results] == [0, 2, 4, 6, 8]
    assert all(r.state == states.SUCCESS for r in results)


def test_each_thread_reuses_its_event_loop(served: SimpleNamespace) -> None:
    first = served.loop_id.delay().get(timeout=WAIT)
    second = served.loop_id.delay().get(timeout=WAIT)

    assert first == second


def test_self_retry_inside_an_async_task(served: SimpleNamespace) -> None:
    assert served.flaky.delay(2).get(timeout=WAIT) == 2


def test_autoretry_for_catches_what_the_coroutine_raises(served: SimpleNamespace) -> None:
    assert served.unreachable.delay().get(timeout=WAIT) == 2


def test_async_signal_receivers_are_awaited(served: SimpleNamespace) -> None:
    result = served.observed.delay()

    assert result.get(timeout=WAIT) == "observed"
    wait_until(lambda: len(served.seen) >= 2, what="both receivers")
    assert served.seen[-2:] == [("prerun", result.id), ("postrun", "observed")]


def test_update_state_inside_an_async_task(served: SimpleNamespace) -> None:
    result = served.reporting.delay()

    wait_until(lambda: result.state == "PROGRESS", what="PROGRESS")
    assert result.info == {"done": 1}
    served.progress_seen.set()
    assert result.get(timeout=WAIT) == "reported"
    served.progress_seen.clear()


def test_soft_time_limit_is_raised_at_the_await(served: SimpleNamespace) -> None:
    started = time.monotonic()

    assert served.soft.delay().get(timeout=WAIT) == "cleaned up"
    assert time.monotonic() - started < WAIT / 2


def test_hard_time_limit_cancels_the_coroutine(served: SimpleNamespace) -> None:
    started = time.monotonic()
    result = served.hard.delay()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert time.monotonic() - started < WAIT / 2
    assert served.add.delay(1, 1).get(timeout=WAIT) == 2


def test_hard_limit_stops_a_body_that_ignores_its_soft_limit(served: SimpleNamespace) -> None:
    with pytest.raises(TimeLimitExceeded):
        served.stubborn.delay().get(timeout=WAIT)


def test_sync_task_hard_limit(served: SimpleNamespace) -> None:
    with pytest.raises(TimeLimitExceeded):
        served.sync_spin.delay().get(timeout=WAIT)
    assert served.add.delay(2, 2).get(timeout=WAIT) == 4


def test_sync_tasks_on_the_asyncio_pool_run_in_its_thread_executor(
    served: SimpleNamespace,
) -> None:
    if served.pool != "asyncio":
        pytest.skip("only the asyncio pool has an executor")

    assert served.sync_where.delay().get(timeout=WAIT).startswith("caraway-sync")


def test_eager_apply_runs_async_tasks_on_this_threads_loop() -> None:
    app = memory_app("async-eager")
    tasks = define_tasks(app)

    assert tasks.add.apply((2, 3)).get() == 5
    assert tasks.loop_id.apply().get() == tasks.loop_id.apply().get()
    assert tasks.flaky.apply((2,)).get() == 2
    assert tasks.unreachable.apply().get() == 2
    eager = tasks.observed.apply()
    assert tasks.seen == [("prerun", eager.id), ("postrun", "observed")]


def test_eager_apply_inside_a_running_loop_fails_with_a_clear_error() -> None:
    app = memory_app("async-eager-nested")
    tasks = define_tasks(app)

    async def inside() -> Any:
        return tasks.add.apply((1, 1))

    result = asyncio.run(inside())

    assert result.state == states.FAILURE
    assert "await its body instead" in str(result.result)
