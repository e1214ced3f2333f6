"""The consumer refills its prefetch window by batches, not one fetch per finished task,
and still fills the window when messages trickle in."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from polling import poll

from caraway import Caraway
from caraway.worker import consumer as consumer_module
from caraway.worker.consumer import Consumer
from caraway.worker.pools.threads import ThreadPool
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer

WINDOW = 8


class Gated:
    """A task that runs only when the test lets one more through, and the fetches asked."""

    def __init__(self, app: Caraway) -> None:
        self.turns = threading.Semaphore(0)
        self.finished: list[int] = []
        self.asked: list[int] = []

        @app.task(name="gated")
        def gated(n: int) -> None:
            self.turns.acquire()
            self.finished.append(n)

        self.task = gated
        fetch = app.broker.fetch

        def counted(queues: Any, limit: int, timeout: float) -> Any:
            self.asked.append(limit)
            return fetch(queues, limit, timeout)

        app.broker.fetch = counted  # type: ignore[method-assign]


@pytest.fixture
def gated(app: Caraway) -> Gated:
    return Gated(app)


@pytest.fixture
def consumer(app: Caraway, gated: Gated) -> Iterator[Consumer]:
    pool = ThreadPool(2)
    pool.start()
    consumer = Consumer(app, app.broker, ["celery"], pool, Timer(), WorkerState(), "w@h", WINDOW)
    consuming = threading.Thread(target=consumer.run, daemon=True)
    consuming.start()
    yield consumer
    consumer.stop()
    for _ in range(64):
        gated.turns.release()
    consuming.join(5)
    pool.stop()


def test_a_busy_pool_gets_its_messages_in_batches_of_half_a_window(
    gated: Gated, consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "REFILL_LINGER", 30.0)  # no fetch for less room
    for n in range(24):
        gated.task.delay(n)
    # Both pool threads run a task (acked as it started, it left the window) and the window
    # is full of reserved ones.
    poll(
        lambda: len(consumer.state.active) == 2 and consumer.in_flight == WINDOW, 5,
        "a full window",
    )  # fmt: skip
    boot = len(gated.asked)
    for done in range(1, 17):  # one task at a time: each start frees one place
        gated.turns.release()
        poll(lambda done=done: len(gated.finished) == done, 5, f"{done} tasks")
    refills = gated.asked[boot:]
    assert refills, "the window was refilled"
    assert min(refills) >= WINDOW // 2, f"fetches asked for {gated.asked}"


def test_messages_that_trickle_in_still_fill_the_window(gated: Gated, consumer: Consumer) -> None:
    gated.task.delay(0)
    gated.task.delay(1)
    poll(lambda: len(consumer.state.active) == 2, 5, "both pool threads busy")
    for n in range(2, 12):  # one at a time, each taken (reserved) before the next is sent
        gated.task.delay(n)
        poll(lambda n=n: consumer.in_flight == min(n - 1, WINDOW), 5, f"{n - 1} reserved")
    assert consumer.in_flight == WINDOW
    assert len(gated.finished) == 0
