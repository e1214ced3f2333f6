"""``task_protocol = 1`` end to end on SQLite: what is sent is Celery's legacy message, and a
caraway worker runs it (a task, a chain sent as links, a chord, a retry with countdown)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, sqlite_app

from caraway import chain, chord, group, signals
from caraway.exceptions import ImproperlyConfigured


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    path = tmp_path_factory.mktemp("protocol1") / "b.sqlite3"
    app = sqlite_app("protocol1", path, task_protocol=1)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(bind=True, max_retries=3)
    def flaky(self: Any, failures: int) -> dict[str, Any]:
        if self.request.retries < failures:
            raise self.retry(countdown=0.2)
        return {"retries": self.request.retries, "at": time.time()}

    sent: list[dict[str, Any]] = []

    def record(headers: dict[str, Any], body: Any, **_: Any) -> None:
        sent.append({"headers": headers, "body": body})

    signals.before_task_publish.connect(record, weak=False)
    worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
    yield SimpleNamespace(app=app, add=add, tsum=tsum, flaky=flaky, sent=sent)
    worker.stop()
    signals.before_task_publish.disconnect(record)


def test_protocol1_runs_a_task_a_chain_a_chord_and_a_retry(served: SimpleNamespace) -> None:
    add, tsum, flaky = served.add, served.tsum, served.flaky

    result = add.delay(2, 3)
    assert result.get(timeout=WAIT) == 5
    first = next(item for item in served.sent if item["body"].get("id") == result.id)
    assert first["headers"] == {}  # protocol 1: everything rides in the body
    assert first["body"]["task"] == add.name
    assert first["body"]["args"] == (2, 3)

    steps = chain(add.s(1, 2), add.s(10), add.s(100))
    assert steps.apply_async().get(timeout=WAIT) == 113

    parts = chord(group(add.s(i, i) for i in range(5)), tsum.s())
    assert parts.apply_async().get(timeout=WAIT) == 20

    started = time.time()
    retried = flaky.delay(2).get(timeout=WAIT)
    assert retried["retries"] == 2
    assert retried["at"] - started >= 0.4  # two countdowns of 0.2 s were honoured


def test_a_chain_travels_as_nested_callbacks(served: SimpleNamespace) -> None:
    add = served.add
    result = chain(add.s(30, 31), add.s(2), add.s(3)).apply_async()
    assert result.get(timeout=WAIT) == 66
    body = next(item["body"] for item in served.sent if item["body"].get("args") == (30, 31))
    (second,) = body["callbacks"]
    assert second["args"] == [2]
    (third,) = second["options"]["link"]
    assert third["args"] == [3]
    assert json.dumps(body)  # plain JSON, as a Celery worker reads it


def test_a_protocol_other_than_1_or_2_is_refused(tmp_path: Path) -> None:
    app = sqlite_app("protocol3", tmp_path / "b.sqlite3", task_protocol=3)
    with pytest.raises(ImproperlyConfigured, match="task_protocol = 3"):
        app.send_task("any.task")
