"""Soft and hard time limits interrupt pure-Python busy loops on the solo and threads pools."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, memory_app

from caraway import states
from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded


def spin(seconds: float) -> None:
    """Pure Python, never blocked in C: where a thread can be interrupted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@pytest.fixture(scope="module", params=["solo", "threads"])
def served(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    app = memory_app(f"limits-{request.param}")

    @app.task(soft_time_limit=0.2)
    def soft() -> str:
        try:
            spin(WAIT)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "never interrupted"

    @app.task(time_limit=0.2)
    def hard() -> str:
        spin(WAIT)
        return "never interrupted"

    @app.task(soft_time_limit=0.2, time_limit=0.5)
    def stubborn() -> str:
        try:
            spin(WAIT)
        except SoftTimeLimitExceeded:
            spin(WAIT)  # ignores the warning and carries on
        return "never interrupted"

    @app.task
    def busy(seconds: float) -> str:
        try:
            spin(seconds)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "finished"

    @app.task(bind=True, time_limit=60, soft_time_limit=45)
    def limits(self: Any) -> list[float | None]:
        return [self.request.time_limit, self.request.soft_time_limit]

    worker = ThreadedWorker(app, pool=request.param, concurrency=2).start()
    yield SimpleNamespace(
        app=app, soft=soft, hard=hard, stubborn=stubborn, busy=busy, limits=limits
    )
    worker.stop()


def test_soft_time_limit_can_be_caught_by_the_task(served: SimpleNamespace) -> None:
    started = time.monotonic()

    assert served.soft.delay().get(timeout=WAIT) == "cleaned up"
    assert time.monotonic() - started < WAIT / 2


def test_soft_time_limit_given_per_call(served: SimpleNamespace) -> None:
    limited = served.busy.apply_async((WAIT,), soft_time_limit=0.2)

    assert limited.get(timeout=WAIT) == "cleaned up"
    # Finishing within the limit: the limit never fires later on, in that thread's next task.
    assert served.busy.apply_async((0.01,), soft_time_limit=0.2).get(timeout=WAIT) == "finished"
    assert served.busy.delay(0.3).get(timeout=WAIT) == "finished"


def test_hard_time_limit_fails_the_task_and_the_worker_goes_on(served: SimpleNamespace) -> None:
    result = served.hard.delay()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert served.busy.delay(0.01).get(timeout=WAIT) == "finished"


def test_a_task_that_ignores_its_soft_limit_is_stopped_by_the_hard_one(
    served: SimpleNamespace,
) -> None:
    result = served.stubborn.delay()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=WAIT)
    assert served.busy.delay(0.01).get(timeout=WAIT) == "finished"


def test_the_request_tells_the_limits_in_force(served: SimpleNamespace) -> None:
    assert served.limits.delay().get(timeout=WAIT) == [60, 45]  # the task's own
    given = served.limits.apply_async(time_limit=10, soft_time_limit=5)
    assert given.get(timeout=WAIT) == [10, 5]  # the call's win
