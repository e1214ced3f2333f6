"""``worker_eta_task_limit``: past that many ETA tasks held outside the prefetch window, the
next ones count in it, so the worker stops taking messages until some ETAs come due (Celery's
guard against a worker filling its memory with far-future tasks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from services import require
from worker_support import WAIT, autojump, wait_until

from caraway import Celery
from caraway.utils.time import FakeClock


@pytest.fixture
def redis_app() -> Iterator[Callable[..., Celery]]:
    """Apps on the shared Redis (the worker holds ETA tasks there, as kombu's transport
    does), each on a queue of its own that is deleted after."""
    host, port = require("redis")
    made: list[Celery] = []

    def make(**conf: Any) -> Celery:
        queue = f"wtest-eta-{uuid.uuid4().hex[:8]}"
        app = Celery(
            "eta-limit", broker=f"redis://{host}:{port}/0", backend="cache+memory://",
            task_default_queue=queue, set_as_current=False, **conf,
        )  # fmt: skip
        made.append(app)
        return app

    yield make
    for app in made:
        app.broker.purge(app.conf.task_default_queue)


def test_past_the_limit_eta_tasks_fill_the_window_and_the_rest_waits(
    start_worker: Any, redis_app: Callable[..., Celery]
) -> None:
    app = redis_app(worker_eta_task_limit=2)
    clock = FakeClock(time.time())

    @app.task(name="eta.echo")
    def echo(n: int) -> int:
        return n

    # One slot, a window of one message: the third ETA task fills it.
    worker = start_worker(app, concurrency=1, prefetch_multiplier=1, clock=clock)
    later = [echo.apply_async((n,), countdown=60) for n in range(4)]
    now = echo.delay(99)

    wait_until(lambda: len(worker.consumer.held_jobs()) == 3, what="three ETA tasks held")
    # The fourth ETA task and the one due now wait in the broker.
    assert app.broker.size(app.conf.task_default_queue) == 2
    assert now.state == "PENDING"

    with autojump(clock, worker):
        assert [r.get(timeout=WAIT) for r in later] == [0, 1, 2, 3]
        assert now.get(timeout=WAIT) == 99


def test_without_a_limit_every_eta_task_is_held_and_the_window_stays_free(
    start_worker: Any, redis_app: Callable[..., Celery]
) -> None:
    app = redis_app()
    clock = FakeClock(time.time())

    @app.task(name="eta.echo")
    def echo(n: int) -> int:
        return n

    worker = start_worker(app, concurrency=1, prefetch_multiplier=1, clock=clock)
    later = [echo.apply_async((n,), countdown=60) for n in range(4)]

    assert echo.delay(99).get(timeout=WAIT) == 99
    assert len(worker.consumer.held_jobs()) == 4
    with autojump(clock, worker):
        assert [r.get(timeout=WAIT) for r in later] == [0, 1, 2, 3]
