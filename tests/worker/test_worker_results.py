"""What a client sees of a task on a real worker: states, progress, callbacks, chains, expiry."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, make_app, sqlite_app, wait_until

from caraway import chain, states
from caraway.exceptions import EncodeError


class Gate:
    """Lets a test see that a task is inside its body, and tells the task when to finish."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the task"


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    broker = request.param
    app = make_app(broker, f"results-{broker}", tmp_path_factory.mktemp("results") / "b.sqlite3")
    # Made up front: a lazily created gate could be made twice, once by each thread.
    gates = {key: Gate() for key in ("tracked", "untracked", "progress")}
    collected: dict[str, list[Any]] = defaultdict(list)

    @app.task(track_started=True)
    def tracked(key: str) -> str:
        gates[key].pass_through()
        return "done"

    @app.task
    def untracked(key: str) -> str:
        gates[key].pass_through()
        return "done"

    @app.task(bind=True)
    def progress(self: Any, key: str) -> str:
        self.update_state(state="PROGRESS", meta={"step": 1, "of": 2})
        gates[key].pass_through()
        return "finished"

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def collect(value: Any, key: str) -> Any:
        collected[key].append(value)
        return value

    @app.task
    def fail() -> None:
        raise KeyError("nope")

    @app.task
    def on_error(request: Any, exc: BaseException, traceback: str) -> None:
        collected["errback"].append((request.id, repr(exc), "KeyError" in traceback))

    @app.task
    def failed_id(task_id: str) -> str:
        return task_id

    @app.task
    def waits_inside() -> int:
        return int(add.delay(1, 1).get(timeout=1))

    @app.task
    def unserializable() -> object:
        return object()

    worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
    yield SimpleNamespace(
        app=app, gates=gates, collected=collected, tracked=tracked, untracked=untracked,
        progress=progress, add=add, collect=collect, fail=fail, on_error=on_error,
        failed_id=failed_id, waits_inside=waits_inside, unserializable=unserializable,
    )  # fmt: skip
    worker.stop()


def test_a_value_the_serializer_cannot_carry_fails_the_task(served: SimpleNamespace) -> None:
    # As in Celery: the task ends FAILURE with the EncodeError, never PENDING for good.
    result = served.unserializable.delay()
    with pytest.raises(EncodeError, match="not JSON serializable"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE


def test_track_started_shows_started_while_running(served: SimpleNamespace) -> None:
    gate = served.gates["tracked"]
    result = served.tracked.delay("tracked")
    assert gate.entered.wait(WAIT)

    assert result.state == states.STARTED
    assert set(result.info) >= {"pid", "hostname"}
    gate.release.set()
    assert result.get(timeout=WAIT) == "done"


def test_without_track_started_a_running_task_reads_pending(served: SimpleNamespace) -> None:
    gate = served.gates["untracked"]
    result = served.untracked.delay("untracked")
    assert gate.entered.wait(WAIT)

    assert result.state == states.PENDING
    gate.release.set()
    assert result.get(timeout=WAIT) == "done"


def test_update_state_is_visible_to_the_client(served: SimpleNamespace) -> None:
    gate = served.gates["progress"]
    result = served.progress.delay("progress")
    assert gate.entered.wait(WAIT)

    assert result.state == "PROGRESS"
    assert result.info == {"step": 1, "of": 2}
    gate.release.set()
    assert result.get(timeout=WAIT) == "finished"
    assert result.state == states.SUCCESS


def test_link_callback_receives_the_result(served: SimpleNamespace) -> None:
    callback = served.collect.s("link")
    callback_result = callback.freeze()

    assert served.add.apply_async((1, 2), link=callback).get(timeout=WAIT) == 3
    assert callback_result.get(timeout=WAIT) == 3
    assert served.collected["link"] == [3]


def test_link_error_callbacks_run_on_failure(served: SimpleNamespace) -> None:
    """Both errback forms, chosen by the task's arity as in Celery: ``(request, exc, traceback)``
    is called in the worker, and a one-argument task is sent the failed task's id."""
    by_id = served.failed_id.s()
    by_id_result = by_id.freeze()

    result = served.fail.apply_async(link_error=[served.on_error.s(), by_id])

    with pytest.raises(KeyError, match="nope"):
        result.get(timeout=WAIT)
    assert by_id_result.get(timeout=WAIT) == result.id
    wait_until(lambda: served.collected["errback"], what="the errback")
    assert served.collected["errback"] == [(result.id, "KeyError('nope')", True)]


def test_chain_passes_each_result_on(served: SimpleNamespace) -> None:
    result = chain(served.add.s(1, 2), served.add.s(3)).apply_async()

    assert result.get(timeout=WAIT) == 6
    assert result.parent is not None
    assert result.parent.get(timeout=WAIT) == 3


def test_get_inside_a_task_raises_runtime_error(served: SimpleNamespace) -> None:
    result = served.waits_inside.delay()

    with pytest.raises(RuntimeError, match=r"Never call result\.get\(\) within a task"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE


def test_result_expires_on_sqlite(tmp_path: Path, start_worker: Any) -> None:
    app = sqlite_app("expiry", tmp_path / "b.sqlite3", result_expires=1.5)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(app, pool="solo")
    result = add.delay(2, 2)
    assert result.get(timeout=WAIT) == 4

    # Once expired, the stored result is no longer read, and cleanup deletes it.
    wait_until(
        lambda: app.AsyncResult(result.id).state == states.PENDING, what="the result to expire"
    )
    assert app.backend.cleanup() == 1
    assert app.backend.get_raw(f"celery-task-meta-{result.id}") is None


def test_a_broken_errback_neither_reruns_the_task_nor_stops_other_errbacks(
    tmp_path: Path, start_worker: Any
) -> None:
    app = sqlite_app("broken-errback", tmp_path / "b.sqlite3")
    runs: list[int] = []

    @app.task(acks_late=True)
    def fail() -> None:
        runs.append(1)
        raise KeyError("nope")

    @app.task
    def broken(request: Any, exc: BaseException, traceback: str) -> None:
        raise RuntimeError("errback bug")

    @app.task
    def failed_id(task_id: str) -> str:
        return task_id

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(app, pool="solo")
    by_id = failed_id.s()
    by_id_result = by_id.freeze()
    result = fail.apply_async(link_error=[broken.s(), by_id])
    after = add.delay(1, 1)

    assert after.get(timeout=WAIT) == 2  # one at a time: a redelivery would have run first
    assert by_id_result.get(timeout=WAIT) == result.id
    with pytest.raises(KeyError, match="nope"):
        result.get(timeout=WAIT)
    assert runs == [1]
    assert app.broker.size("celery") == 0
