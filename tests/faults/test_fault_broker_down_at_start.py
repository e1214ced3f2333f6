"""A worker started while its Redis is down (``broker_connection_retry_on_startup``,
Celery's default True): it keeps trying, does not claim to be ready, and serves as soon
as the broker comes up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_servers import PrivateRedis, redis_conf, redis_empty
from fault_workers import FaultProject, check

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)

DOWN_FOR = 3.0


def test_a_worker_started_before_its_redis(
    tmp_path: Path, fault_project: Callable[..., FaultProject]
) -> None:
    server = PrivateRedis(tmp_path / "redis")
    try:
        project = fault_project(**redis_conf(server))
        worker = project.spawn("threads", 2)
        time.sleep(DOWN_FOR)
        assert worker.poll() is None, f"the worker gave up at once:\n{project.log()}"
        said_ready = " ready." in project.log()
        assert not said_ready, "the worker said ready before reaching its broker"

        up_at = time.monotonic()
        server.start()
        project.wait_ready()
        _, probes = project.resume()
        recovery = time.monotonic() - up_at
        check(
            project, probes, (0.0, 0.0), redis_empty(server), "broker-down-at-start/redis", recovery
        )
    finally:
        server.kill()
