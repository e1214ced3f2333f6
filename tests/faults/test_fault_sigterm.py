"""SIGTERM with a full prefetch window, with ``acks_late`` (Redis).

A warm shutdown: the worker gives back every prefetched message at once (nothing stays
leased until a lease runs out), lets the running tasks finish and acknowledges them, and
exits 0. A new worker then runs the rest: none lost, none run twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis
from fault_servers import PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 3), ("prefork", 2)])
def test_sigterm_with_a_full_prefetch_window(
    private_redis: PrivateRedis,
    fault_project: Callable[..., FaultProject],
    pool: str,
    concurrency: int,
) -> None:
    project = fault_project(**redis_conf(private_redis))
    worker = project.spawn(pool, concurrency)
    project.wait_ready()
    ids = project.send(50)
    project.wait_ended(6)

    running = set(project.ledger.running_now())
    termed_at = time.time()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, project.log()
    fault = (termed_at, time.time())
    ended = project.ledger.ended()
    assert running <= ended, f"running tasks did not finish: {sorted(running - ended)}"
    client = redis.Redis(port=private_redis.port)
    try:
        assert client.hlen("unacked") == 0, "messages stay leased to a worker that left"
        assert client.llen("celery") == len(set(ids) - ended), "messages given back"
    finally:
        client.close()

    project.spawn(pool, concurrency)
    project.wait_ready()
    recovery, probes = project.resume()
    figures = check(
        project, ids + probes, fault, redis_empty(private_redis), f"sigterm/{pool}", recovery
    )
    assert figures.twice == 0, "a task ran twice after a warm shutdown"
