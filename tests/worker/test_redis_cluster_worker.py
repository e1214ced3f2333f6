"""Real workers on a Redis Cluster (``redis+cluster://``), broker and results both there.

The cluster is the run's private one (``tests/redis_cluster.py``); each test keeps to its
own ``global_keyprefix`` and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis_cluster import shared_cluster

from caraway import Celery, chord, group


@pytest.fixture
def cluster_app() -> Iterator[Celery]:
    cluster = shared_cluster()
    prefix = f"wcluster-{uuid.uuid4().hex[:10]}:"
    options = {"global_keyprefix": prefix, "visibility_timeout": 30}
    app = Celery(
        "wcluster", broker=cluster.url, backend=cluster.url, set_as_current=False,
        broker_transport_options=options, result_backend_transport_options=options,
    )  # fmt: skip

    @app.task(name="wcluster.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wcluster.total")
    def total(values: list[int]) -> int:
        return sum(values)

    try:
        yield app
    finally:
        app.close()
        for port in cluster.masters():
            client = redis.Redis(port=port)
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
            client.close()


def test_a_task_sent_with_delay_returns_its_result(
    cluster_app: Celery, start_worker: Callable[..., Any]
) -> None:
    start_worker(cluster_app, concurrency=2)
    add = cluster_app.tasks["wcluster.add"]

    results = [add.delay(n, n) for n in range(20)]

    assert [r.get(timeout=20) for r in results] == [2 * n for n in range(20)]
    assert asyncio.run(add.delay(2, 3).get_async(timeout=20)) == 5


def test_a_chord_joins_on_the_cluster(
    cluster_app: Celery, start_worker: Callable[..., Any]
) -> None:
    start_worker(cluster_app, concurrency=2)
    add, total = cluster_app.tasks["wcluster.add"], cluster_app.tasks["wcluster.total"]

    result = chord(add.s(n, 1) for n in range(10))(total.s())

    assert result.get(timeout=20) == sum(n + 1 for n in range(10))
    assert group(add.s(n, 0) for n in range(5)).delay().get(timeout=20) == list(range(5))


def test_remote_control_reaches_the_worker_through_cluster_pub_sub(
    cluster_app: Celery, start_worker: Callable[..., Any]
) -> None:
    worker = start_worker(cluster_app, concurrency=1)

    replies = cluster_app.control.ping(timeout=5.0, limit=1)

    assert [next(iter(reply)) for reply in replies] == [worker.hostname]
