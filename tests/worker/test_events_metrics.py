"""The dashboard's ``/metrics``: an events ``State`` fed by a real worker's events, read through
``events_collector`` and prometheus-client's parser; counts match what ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from worker_support import WAIT, sqlite_app

from caraway.events import EventReceiver
from caraway.events.state import State
from caraway.metrics import events_collector, render_latest


def samples_of(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = render_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_events_of_a_known_mix_become_the_same_counts(
    tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    app = sqlite_app("evmetrics", tmp_path / "b.db")
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True

    @app.task(name="e.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="e.fail")
    def fail() -> None:
        raise ValueError("no")

    @app.task(name="e.flaky", bind=True, default_retry_delay=0)
    def flaky(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry()
        return "ok"

    start_worker(app, hostname="ev@metrics", concurrency=1)
    seen_by_dashboard: list[str] = []
    state = State(callback=lambda _state, event: seen_by_dashboard.append(event["type"]))
    registry = CollectorRegistry()
    registry.register(events_collector(state, app))
    try:
        with EventReceiver(app) as receiver:
            results = [add.delay(i, 1) for i in range(3)]
            failed = fail.delay()
            retried = flaky.delay()
            ends = 0
            for event in receiver.itercapture(timeout=WAIT):
                state.event(event)
                ends += event["type"] in ("task-succeeded", "task-failed")
                if ends == 5:
                    break
        assert [r.get(timeout=WAIT) for r in results] == [1, 2, 3]
        with pytest.raises(ValueError, match="no"):
            failed.get(timeout=WAIT)
        assert retried.get(timeout=WAIT) == "ok"
        samples = samples_of(registry)
    finally:
        app.close()

    me = "ev@metrics"

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    def tasks(task: str, state: str) -> float:
        return value("caraway_tasks_total", worker=me, task=task, state=state)

    assert [tasks("e.add", s) for s in ("RECEIVED", "STARTED", "SUCCESS")] == [3, 3, 3]
    assert [tasks("e.fail", s) for s in ("RECEIVED", "STARTED", "FAILURE")] == [1, 1, 1]
    assert [tasks("e.flaky", s) for s in ("STARTED", "RETRY", "SUCCESS")] == [2, 1, 1]
    sent = sum(
        v
        for (name, labels), v in samples.items()
        if name == "caraway_tasks_total" and ("state", "PENDING") in labels
    )
    assert sent == 3 + 1 + 2  # task-sent events, from the producer (and the retry's resend)
    for task, runs in (("e.add", 3), ("e.fail", 1), ("e.flaky", 2)):
        assert value("caraway_task_runtime_seconds_count", worker=me, task=task) == runs
        assert value("caraway_task_queue_wait_seconds_count", worker=me, task=task) == runs
    assert value("caraway_worker_online", worker=me) == 1
    assert value("caraway_worker_reserved_tasks", worker=me) == 0
    assert value("caraway_queue_depth", queue="celery") == 0
    assert "task-succeeded" in seen_by_dashboard  # the callback set before is still called
