"""``send_batch``: many signatures, few broker calls, each message as ``apply_async`` sends it."""

from __future__ import annotations

from typing import Any

import pytest

from caraway import Caraway, signals
from caraway.calling import send_batch


def test_send_batch_publishes_in_chunks_with_each_messages_options(
    app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    calls: list[int] = []
    publish = app.broker.publish

    def record(batch: Any) -> None:
        calls.append(len(batch))
        publish(batch)

    monkeypatch.setattr(app.broker, "publish", record)
    monkeypatch.setattr("caraway.calling.BATCH_CHUNK", 4)
    after: list[str] = []

    def on_after(sender: Any = None, headers: Any = None, **_: Any) -> None:
        after.append(headers["id"])

    signals.after_task_publish.connect(on_after)
    try:
        sigs = [add.s(i, i) for i in range(9)] + [add.s(1, 1).set(queue="other", priority=5)]
        results = send_batch(app, sigs)
    finally:
        signals.after_task_publish.disconnect(on_after)

    assert calls == [4, 4, 2]
    assert after == [r.id for r in results]
    assert app.broker.size("celery") == 9
    assert app.broker.size("other") == 1


def test_send_batch_of_nothing_publishes_nothing(app: Caraway) -> None:
    assert send_batch(app, []) == []
