"""Redis SIGKILLed and restarted under load (3 s down), with ``acks_late``.

The server keeps an append-only file synced on every write, so it comes back with every
message it had acknowledged. A worker must then resume on its own, acknowledge what it ran
during the outage (the acks that failed are owed, not forgotten), and run again only what
was running when Redis died.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fault_servers import PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)

DOWN_FOR = 3.0

#: Longer than the outage and the reconnection together, so that the messages the worker
#: holds (and renews once back) never expire under it; a failed ack that is never sent
#: again still shows, as a message that comes back when this lease ends.
OUTAGE_LEASE = 15.0


@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 4), ("prefork", 2)])
def test_redis_killed_and_restarted_under_load(
    private_redis: PrivateRedis,
    fault_project: Callable[..., FaultProject],
    pool: str,
    concurrency: int,
) -> None:
    project = fault_project(**redis_conf(private_redis, lease=OUTAGE_LEASE))
    project.spawn(pool, concurrency)
    project.wait_ready()
    ids = project.send(60)
    project.wait_ended(10)

    killed_at = time.time()
    private_redis.kill()
    fault = (killed_at, time.time())
    time.sleep(DOWN_FOR)
    private_redis.start()

    recovery, probes = project.resume()
    check(
        project, ids + probes, fault, redis_empty(private_redis), f"redis-restart/{pool}", recovery
    )
