"""Fixtures for ``tests/faults``: private servers the tests may kill, and fault projects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_servers import PrivateRedis
from fault_workers import FaultProject


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of the test's own (append-only file in ``tmp_path``), started."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def fault_project(tmp_path: Path) -> Iterator[Callable[..., FaultProject]]:
    """``fault_project(**conf)``: the fault tasks with these settings; workers killed after."""
    made: list[FaultProject] = []

    def make(**conf: Any) -> FaultProject:
        project = FaultProject(tmp_path, conf)
        made.append(project)
        return project

    yield make
    for project in made:
        project.close()
