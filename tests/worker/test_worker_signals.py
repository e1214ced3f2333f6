"""Signals sent by a real worker and by the client, with Celery's senders and arguments."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, memory_app

from caraway import signals, states
from caraway.exceptions import NotRegistered, Retry, TaskRevokedError
from caraway.request import Context
from caraway.utils.einfo import ExceptionInfo

WATCHED = [
    "before_task_publish", "after_task_publish", "task_received", "task_prerun",
    "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked",
    "task_unknown", "worker_init", "worker_process_init", "worker_ready",
    "worker_shutting_down", "worker_shutdown",
]  # fmt: skip


class Received:
    """Every signal sent while connected, in order: ``(signal name, sender, arguments)``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any, dict[str, Any]]] = []

    def of(self, name: str, **match: Any) -> list[tuple[Any, dict[str, Any]]]:
        return [
            (sender, kwargs)
            for signal_name, sender, kwargs in self.log
            if signal_name == name and all(kwargs.get(k) == v for k, v in match.items())
        ]

    def one(self, name: str, **match: Any) -> tuple[Any, dict[str, Any]]:
        found = self.of(name, **match)
        assert len(found) == 1, f"{name} {match}: {found}"
        return found[0]

    def published(self, name: str, task_id: str) -> tuple[Any, dict[str, Any]]:
        """The one ``before_task_publish``/``after_task_publish`` for ``task_id``."""
        [found] = [(s, kw) for s, kw in self.of(name) if kw["headers"]["id"] == task_id]
        return found

    def names(self) -> list[str]:
        return [name for name, _, _ in self.log]


@pytest.fixture
def received() -> Iterator[Received]:
    record = Received()
    connected = []
    for name in WATCHED:
        signal = getattr(signals, name)

        def receiver(sender: Any = None, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            record.log.append((_name, sender, kwargs))

        signal.connect(receiver)
        connected.append((signal, receiver))
    yield record
    for signal, receiver in connected:
        signal.disconnect(receiver)


def test_signals_over_a_workers_life(received: Received) -> None:
    app = memory_app("signals")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fail(x: int) -> None:
        raise KeyError(x)

    @app.task(bind=True)
    def retry_once(self: Any) -> int:
        if self.request.retries == 0:
            raise self.retry(exc=ValueError("once"), countdown=0.01)
        return int(self.request.retries)

    threaded = ThreadedWorker(app, pool="threads", concurrency=2).start()
    worker = threaded.worker
    ok = add.delay(1, 2)
    failed = fail.delay(7)
    retried = retry_once.delay()
    expired = add.apply_async((0, 0), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    unknown = app.send_task("signals.unknown", args=(1,))
    assert ok.get(timeout=WAIT) == 3
    assert retried.get(timeout=WAIT) == 1
    for result, exc_type in ((failed, KeyError), (expired, TaskRevokedError)):
        with pytest.raises(exc_type):
            result.get(timeout=WAIT)
    with pytest.raises(NotRegistered):
        unknown.get(timeout=WAIT)
    threaded.stop()  # waits for running tasks: every task signal has been sent now

    # Publishing, on the client side: the sender is the task name.
    sender, before = received.published("before_task_publish", ok.id)
    assert sender == add.name
    assert (list(before["body"][0]), before["body"][1]) == ([1, 2], {})
    assert before["routing_key"] == "celery"
    assert before["properties"]["correlation_id"] == ok.id
    sender, after = received.published("after_task_publish", ok.id)
    assert sender == add.name
    assert after["routing_key"] == "celery"

    # Receiving and running, on the worker side.
    consumer = worker.consumer
    received_ids = [kw["request"].id for s, kw in received.of("task_received") if s is consumer]
    assert sorted(received_ids) == sorted(
        [ok.id, failed.id, retried.id, retried.id, expired.id]
    )  # the retry arrives twice; the unknown task never becomes a request
    sender, prerun = received.one("task_prerun", task_id=ok.id)
    assert sender is add
    assert prerun["task"] is add
    assert (prerun["args"], prerun["kwargs"]) == ([1, 2], {})
    sender, postrun = received.one("task_postrun", task_id=ok.id)
    assert sender is add
    assert (postrun["retval"], postrun["state"]) == (3, states.SUCCESS)
    assert [s for s, kw in received.of("task_success", result=3)] == [add]

    sender, failure = received.one("task_failure", task_id=failed.id)
    assert sender is fail
    assert isinstance(failure["exception"], KeyError)
    assert (failure["args"], failure["kwargs"]) == ((7,), {})
    assert isinstance(failure["einfo"], ExceptionInfo)
    assert failure["traceback"] is not None
    _, postrun = received.one("task_postrun", task_id=failed.id)
    assert postrun["state"] == states.FAILURE

    [(sender, retry)] = received.of("task_retry")
    assert sender is retry_once
    assert isinstance(retry["request"], Context)
    assert retry["request"].id == retried.id
    assert repr(retry["reason"]) == "ValueError('once')"
    # Two threads: the second run may end before the first one's postrun is sent.
    assert sorted(kw["state"] for _, kw in received.of("task_postrun", task_id=retried.id)) == [
        states.RETRY,
        states.SUCCESS,
    ]
    assert not any(isinstance(kw.get("retval"), Retry) for _, kw in received.of("task_success"))

    [(sender, revoked)] = received.of("task_revoked")
    assert sender is add
    assert revoked["request"].id == expired.id
    assert (revoked["terminated"], revoked["signum"], revoked["expired"]) == (False, None, True)
    assert received.of("task_prerun", task_id=expired.id) == []

    sender, unknown_info = received.one("task_unknown", id=unknown.id)
    assert sender is consumer
    assert unknown_info["name"] == "signals.unknown"
    assert isinstance(unknown_info["exc"], NotRegistered)
    assert unknown_info["message"].task_id == unknown.id

    # The worker's own life, in order.
    lifecycle = [
        name
        for name in received.names()
        if name.startswith("worker_") and name != "worker_process_init"
    ]
    assert lifecycle == ["worker_init", "worker_ready", "worker_shutting_down", "worker_shutdown"]
    assert received.names().index("worker_process_init") < received.names().index("worker_ready")
    for name in ("worker_init", "worker_shutdown"):
        assert received.one(name)[0] is worker
    # Celery sends its consumer here, caraway its worker: handlers rely on these attributes.
    ready_sender = received.one("worker_ready")[0]
    assert ready_sender.app is app
    assert ready_sender.hostname == worker.hostname
    sender, shutting_down = received.one("worker_shutting_down")
    assert sender == worker.hostname
    assert (shutting_down["how"], shutting_down["exitcode"]) == ("Warm", 0)
