"""Which messages a worker takes, and in which order: priorities, routes and queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, make_app

from caraway import states


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_higher_priority_runs_first(broker: str, tmp_path: Path, start_worker: Any) -> None:
    """SQLite and memory order by priority "higher number first", as AMQP does.

    (Redis' convention is the reverse; a broker declares its order in its capabilities:
    ``priority_order``.)
    """
    app = make_app(broker, f"priority-{broker}", tmp_path / "b.sqlite3")
    order: list[int] = []

    @app.task
    def record(priority: int) -> int:
        order.append(priority)
        return priority

    assert app.broker.capabilities.priority_order == "high-first"
    results = [record.apply_async((p,), priority=p) for p in (3, 0, 9, 5, 1, 5)]
    # Started after publishing, one task at a time: the run order is the delivery order.
    start_worker(app, pool="solo")

    assert [r.get(timeout=WAIT) for r in results] == [3, 0, 9, 5, 1, 5]
    assert order == [9, 5, 5, 3, 1, 0]


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_a_worker_on_q1_runs_only_what_is_routed_to_q1(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app = make_app(
        broker,
        f"routes-{broker}",
        tmp_path / "b.sqlite3",
        task_routes={"routes.for_q1": {"queue": "q1"}},
    )

    @app.task(name="routes.for_q1", bind=True)
    def for_q1(self: Any) -> str:
        return str(self.request.delivery_info["routing_key"])

    @app.task(name="routes.default", bind=True)
    def default(self: Any) -> str:
        return str(self.request.delivery_info["routing_key"])

    start_worker(app, pool="threads", concurrency=2, queues=["q1"])
    routed = for_q1.delay()
    left_alone = default.delay()
    sent_to_q1 = default.apply_async(queue="q1")  # an explicit queue beats the default

    assert routed.get(timeout=WAIT) == "q1"
    assert sent_to_q1.get(timeout=WAIT) == "q1"
    assert left_alone.state == states.PENDING
    assert app.broker.size("celery") == 1
    assert app.broker.size("q1") == 0
