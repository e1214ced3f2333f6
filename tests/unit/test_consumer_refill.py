"""The consumer refills its prefetch window by batches, not one fetch per finished task."""

from __future__ import annotations

import threading
from typing import Any

from polling import poll

from caraway import Caraway
from caraway.worker.consumer import Consumer
from caraway.worker.pools.threads import ThreadPool
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer


def test_a_busy_pool_gets_its_messages_in_batches_of_half_a_window(app: Caraway) -> None:
    turns = threading.Semaphore(0)
    finished: list[int] = []

    @app.task(name="gated")
    def gated(n: int) -> None:
        turns.acquire()
        finished.append(n)

    for n in range(24):
        gated.delay(n)
    asked: list[int] = []
    fetch = app.broker.fetch

    def counted(queues: Any, limit: int, timeout: float) -> Any:
        asked.append(limit)
        return fetch(queues, limit, timeout)

    app.broker.fetch = counted  # type: ignore[method-assign]
    pool, timer = ThreadPool(2), Timer()
    pool.start()
    consumer = Consumer(app, app.broker, ["celery"], pool, timer, WorkerState(), "w@h", 8)
    consuming = threading.Thread(target=consumer.run, daemon=True)
    consuming.start()
    try:
        poll(lambda: consumer.in_flight == 8, 5, "a full window")
        for done in range(1, 25):  # one task at a time: each finish frees one slot
            turns.release()
            poll(lambda done=done: len(finished) == done, 5, f"{done} tasks")
        poll(lambda: consumer.in_flight == 0, 5, "an empty window")
    finally:
        consumer.stop()
        consuming.join(5)
        pool.stop()
    assert sorted(finished) == list(range(24))
    taken = [limit for limit in asked if limit < 8]  # the first fetch asks for the whole window
    assert taken, "the window was refilled"
    assert min(taken) >= 4, f"fetches asked for {asked}: one per finished task"
