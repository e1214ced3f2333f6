"""``caraway.contrib.abortable``, ``allow_join_result`` and the testing helpers
(``testing.tasks.ping``, ``testing.manager.Manager``, the default node name), each run
against a real embedded worker on a memory store of the test's own."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway
from caraway.contrib.abortable import AbortableAsyncResult, AbortableTask
from caraway.contrib.testing.app import TestApp, setup_default_app
from caraway.contrib.testing.manager import Manager, Sentinel
from caraway.contrib.testing.worker import start_worker
from caraway.result import allow_join_result

WAIT = 10.0


@pytest.fixture
def app() -> Iterator[Caraway]:
    with setup_default_app(TestApp(broker=f"memory://{uuid.uuid4().hex}")) as test_app:
        yield test_app


def test_an_aborted_task_sees_it_and_stops_early(app: Caraway) -> None:
    started = threading.Event()

    @app.task(bind=True, base=AbortableTask)
    def long_job(self: AbortableTask) -> str:
        started.set()
        for _ in range(int(WAIT / 0.01)):
            if self.is_aborted():
                return "stopped early"
            threading.Event().wait(0.01)
        return "ran to the end"

    with start_worker(app, pool="threads", concurrency=2):
        result = long_job.delay()
        assert isinstance(result, AbortableAsyncResult)
        assert started.wait(WAIT)
        assert not result.is_aborted()
        result.abort()
        assert result.get(timeout=WAIT) == "stopped early"


def test_get_inside_a_task_needs_allow_join_result(app: Caraway) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def waits(allowed: bool) -> Any:
        if not allowed:
            return add.delay(1, 2).get(timeout=WAIT)
        with allow_join_result():
            return add.delay(1, 2).get(timeout=WAIT)

    with start_worker(app, pool="threads", concurrency=2):
        assert waits.delay(True).get(timeout=WAIT) == 3
        with pytest.raises(RuntimeError, match=r"Never call result\.get"):
            waits.delay(False).get(timeout=WAIT)


def test_testing_ping_answers_pong_and_the_default_node_name_is_celerys(app: Caraway) -> None:
    from caraway.contrib.testing.tasks import ping

    with start_worker(app) as first, start_worker(app) as second:
        assert ping.delay().get(timeout=WAIT) == "pong"
        host = socket.gethostname()
        assert first.hostname == f"gen{os.getpid()}@{host}"
        assert second.hostname != first.hostname  # two at once stay apart
        assert second.hostname.startswith(f"gen{os.getpid()}-")
    with start_worker(app) as again:
        assert again.hostname == f"gen{os.getpid()}@{host}"  # the name is free again


def test_manager_waits_until_a_task_is_accepted(app: Caraway) -> None:
    release = threading.Event()

    @app.task
    def blocker() -> str:
        release.wait(WAIT)
        return "done"

    manager = Manager(app)
    with start_worker(app, pool="threads", concurrency=1) as worker:
        running, waiting = blocker.delay(), blocker.delay()
        assert manager.assert_accepted([running.id], interval=0.05, timeout=WAIT)
        states = manager.query_task_states([running.id, waiting.id])
        assert states[running.id] == {"active"}
        assert not manager.is_accepted([waiting.id])
        with pytest.raises(Sentinel, match="waiting for tasks to be accepted"):
            manager.assert_accepted([waiting.id], interval=0.05, timeout=0.3)
        assert worker.hostname in manager.inspect(timeout=0.5).ping()
        release.set()
        assert [running.get(timeout=WAIT), waiting.get(timeout=WAIT)] == ["done", "done"]
        assert manager.missing_results(app.GroupResult(results=[running, waiting])) == []
