"""``caraway.contrib.testing``: the test app and the embedded worker, run for real."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, current_app
from caraway.contrib.testing.app import DEFAULT_TEST_CONFIG, TestApp, Trap, setup_default_app
from caraway.contrib.testing.worker import (
    EmbeddedWorkerError,
    start_worker,
    test_worker_started,
    test_worker_stopped,
)
from caraway.current import get_current_app
from caraway.signals import worker_init


@pytest.fixture
def app() -> Iterator[Caraway]:
    """A test app on a memory store of its own, current during the test only."""
    with setup_default_app(TestApp(broker=f"memory://{uuid.uuid4().hex}")) as test_app:
        yield test_app


def add_task(app: Caraway) -> Any:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    return add


def test_test_app_uses_in_memory_engines_and_takes_overrides() -> None:
    app = TestApp(config={"task_default_queue": "tests"}, backend="sqlite:///unused.db")

    assert app.conf.broker_url == DEFAULT_TEST_CONFIG["broker_url"] == "memory://"
    assert app.conf.result_backend == "sqlite:///unused.db"
    assert app.conf.task_default_queue == "tests"
    assert app.conf.task_always_eager is False
    assert app.conf.worker_hijack_root_logger is False


def test_start_worker_runs_tasks_on_the_memory_broker(app: Caraway) -> None:
    add = add_task(app)

    with start_worker(app) as worker:
        assert worker.ready.is_set()
        results = [add.delay(i, i) for i in range(5)]
        assert [r.get(timeout=5) for r in results] == [0, 2, 4, 6, 8]


def test_start_worker_runs_tasks_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'caraway.db'}"
    with setup_default_app(TestApp(broker=url, backend=url)) as app:
        add = add_task(app)

        with start_worker(app, pool="threads", concurrency=2):
            assert add.delay(20, 22).get(timeout=5) == 42

    assert (tmp_path / "caraway.db").exists()


def test_the_worker_answers_the_ping_on_its_own_queue(app: Caraway) -> None:
    add = add_task(app)

    with start_worker(app, queues=["elsewhere"]) as worker:
        assert worker.queues == ["elsewhere"]
        assert app.tasks["celery.ping"].apply_async(queue="elsewhere").get(timeout=5) == "pong"
        assert add.apply_async((1, 2), queue="elsewhere").get(timeout=5) == 3


def test_the_ping_check_needs_a_result_backend() -> None:
    with setup_default_app(Caraway("nobackend", broker=f"memory://{uuid.uuid4().hex}")) as app:
        with (
            pytest.raises(EmbeddedWorkerError, match="perform_ping_check=False"),
            start_worker(app),
        ):
            pass  # pragma: no cover - the ping check fails first

        with start_worker(app, perform_ping_check=False) as worker:
            assert worker.ready.is_set()


def test_the_worker_stops_on_exit_and_leaves_later_messages_queued(app: Caraway) -> None:
    add = add_task(app)
    with start_worker(app) as worker:
        assert add.delay(1, 1).get(timeout=5) == 2

    assert worker.stopped.is_set()
    assert not [t for t in threading.enumerate() if t.name.endswith(worker.hostname)]
    add.delay(2, 2)
    assert app.broker.size("celery") == 1


def test_signals_tell_when_the_worker_started_and_stopped(app: Caraway) -> None:
    seen: list[tuple[str, Any]] = []
    started = test_worker_started.connect(lambda sender, **kw: seen.append(("started", kw)))
    stopped = test_worker_stopped.connect(lambda sender, **kw: seen.append(("stopped", kw)))
    try:
        with start_worker(app, perform_ping_check=False) as worker:
            pass
    finally:
        test_worker_started.disconnect(started)
        test_worker_stopped.disconnect(stopped)

    assert [name for name, _ in seen] == ["started", "stopped"]
    assert seen[0][1]["worker"] is worker
    assert seen[0][1]["consumer"] is worker.consumer


def test_a_worker_that_cannot_boot_is_reported() -> None:
    app = TestApp(broker="memroy://")
    with (
        setup_default_app(app),
        pytest.raises(EmbeddedWorkerError, match="failed to start") as info,
        start_worker(app),
    ):
        pass  # pragma: no cover

    assert "Did you mean 'memory'" in str(info.value.__cause__)


def test_a_worker_that_is_not_ready_in_time_is_reported_and_stopped(app: Caraway) -> None:
    release = threading.Event()

    def slow_boot(sender: Any, **kwargs: Any) -> None:
        release.wait(5)

    worker_init.connect(slow_boot)
    try:
        with (
            pytest.raises(EmbeddedWorkerError, match=r"not ready within 0\.2 s"),
            start_worker(app, startup_timeout=0.2, shutdown_timeout=0.2),
        ):
            pass  # pragma: no cover
    finally:
        worker_init.disconnect(slow_boot)
        release.set()

    # The worker asked to stop while booting must not go on to consume.
    workers = [t for t in threading.enumerate() if t.name.startswith("caraway-worker gen")]
    for thread in workers:
        thread.join(5)
        assert not thread.is_alive()


def test_a_worker_that_does_not_stop_in_time_is_reported(app: Caraway) -> None:
    running, release = threading.Event(), threading.Event()

    @app.task
    def block() -> bool:
        running.set()
        return release.wait(10)

    stack = ExitStack()
    worker = stack.enter_context(start_worker(app, shutdown_timeout=0.2))
    result = block.delay()
    assert running.wait(5)

    with pytest.raises(EmbeddedWorkerError, match=r"did not stop within 0\.2 s"):
        stack.close()

    release.set()
    assert result.get(timeout=5) is True
    assert worker.stopped.wait(5)


def test_setup_default_app_makes_the_app_current_then_restores(app: Caraway) -> None:
    other = TestApp()

    with setup_default_app(other):
        assert get_current_app() is other
    assert get_current_app() is app

    with setup_default_app(TestApp(), use_trap=True):
        assert isinstance(get_current_app(), Trap)
        with pytest.raises(RuntimeError, match="Test depends on current_app"):
            current_app.conf  # noqa: B018
        assert not hasattr(get_current_app(), "__wrapped__")
    assert get_current_app() is app
