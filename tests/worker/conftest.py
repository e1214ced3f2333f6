"""Fixtures for ``tests/worker``: real workers (threads or subprocesses) on real brokers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_support import ThreadedWorker, WorkerProject

from caraway import Celery


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Any]]:
    """``start_worker(app, **options)``: an in-thread worker, ready, stopped after the test."""
    started: list[ThreadedWorker] = []

    def start(app: Celery, **options: Any) -> Any:
        threaded = ThreadedWorker(app, **options)
        started.append(threaded)
        return threaded.start().worker

    yield start
    for threaded in reversed(started):
        threaded.stop()


@pytest.fixture
def worker_project(tmp_path: Path) -> Iterator[WorkerProject]:
    """The crash-test tasks module in ``tmp_path``; its worker processes are killed after."""
    project = WorkerProject(tmp_path)
    try:
        yield project
    finally:
        project.close()
        project.app.close()
