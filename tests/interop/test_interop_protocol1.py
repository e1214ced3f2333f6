"""``task_protocol = 1`` across libraries: a real Celery 5.7 client sends legacy messages to a
caraway worker, and a caraway client sends them to a Celery worker (a task with a countdown,
a chain, which protocol 1 carries as nested links, and a chord on Redis)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from interop_support import WAIT, Wire, Workers, close_celery_app

TO_CARAWAY = "protocol1.to.caraway"
TO_CELERY = "protocol1.to.celery"


@pytest.fixture(scope="module")
def started(workers: Workers) -> Workers:
    workers.start("caraway", TO_CARAWAY, ready=False)
    workers.start("celery", TO_CELERY, ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


@pytest.fixture(scope="module", params=["celery", "caraway"])
def sender(request: pytest.FixtureRequest, wire: Wire, project: Any) -> Iterator[Any]:
    """A client app of one library, sending protocol 1, and the headers it published."""
    module = importlib.import_module(f"{request.param}_side")
    app = module.build(wire.broker, wire.backend, wire.transport, wire.result_transport)
    app.conf.task_protocol = 1
    lib = importlib.import_module(request.param)
    published: list[dict[str, Any]] = []

    def record(headers: dict[str, Any], body: Any, **_: Any) -> None:
        published.append({"headers": headers, "body": body})

    lib.signals.before_task_publish.connect(record, weak=False)
    app.published = published
    app.lib = lib
    try:
        yield app
    finally:
        lib.signals.before_task_publish.disconnect(record)
        if request.param == "celery":
            close_celery_app(app)
        else:
            app.close()


def _target(app: Any) -> tuple[str, str]:
    """The queue of the other library's worker, and that library's name."""
    return (TO_CELERY, "celery") if app.lib.__name__ == "caraway" else (TO_CARAWAY, "caraway")


def _sig(app: Any, name: str, *args: Any, queue: str) -> Any:
    return app.tasks[name].s(*args).set(queue=queue)


def test_a_task_with_a_countdown_runs_on_the_other_library(started: Workers, sender: Any) -> None:
    queue, runner = _target(sender)
    started_at = time.time()

    result = sender.tasks["interop.echo"].apply_async(("v1",), queue=queue, countdown=1)

    assert result.get(timeout=WAIT) == {"value": "v1", "by": runner}
    assert time.time() - started_at >= 1
    sent = next(item for item in sender.published if item["body"].get("id") == result.id)
    assert sent["headers"] == {}  # protocol 1: the task travels in the body
    assert sent["body"]["eta"] is not None


def test_a_chain_runs_on_the_other_library(started: Workers, sender: Any) -> None:
    queue, runner = _target(sender)
    flow = sender.lib.chain(
        _sig(sender, "interop.add", 1, 2, queue=queue),
        _sig(sender, "interop.add", 10, queue=queue),
        _sig(sender, "interop.echo", queue=queue),
    )

    result = flow.apply_async()

    assert result.get(timeout=WAIT) == {"value": 13, "by": runner}
    assert result.parent.get(timeout=WAIT) == 13


def test_a_chord_runs_on_the_other_library(started: Workers, wire: Wire, sender: Any) -> None:
    if wire.name != "redis":
        pytest.skip("rpc:// results cannot join chords, in Celery as in caraway")
    queue, runner = _target(sender)
    header = [_sig(sender, "interop.add", i, 1, queue=queue) for i in range(4)]

    result = sender.lib.chord(header, _sig(sender, "interop.tsum", queue=queue)).apply_async()

    assert result.get(timeout=WAIT) == {"sum": 1 + 2 + 3 + 4, "by": runner}
