"""OpenTelemetry traces across a real send and a real run: the SDK's in-memory exporter sees
the sender's PRODUCER span and the worker's CONSUMER span in one trace, a chain's second task
under the first task's run, and a failure as an error with its exception."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otel_support import in_memory_exporter
from worker_support import WAIT, ThreadedWorker, sqlite_app, wait_until

from caraway import chain, signals, states


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return in_memory_exporter()


@pytest.fixture(scope="module")
def traced(
    exporter: InMemorySpanExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    app = sqlite_app("traced", tmp_path_factory.mktemp("traced") / "b.db",
                     opentelemetry_tracing=True)  # fmt: skip

    @app.task(name="traced.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="traced.boom")
    def boom() -> None:
        raise ValueError("boom")

    threaded = ThreadedWorker(app, concurrency=2).start()
    yield SimpleNamespace(app=app, add=add, boom=boom)
    threaded.stop()
    app.close()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Callable[[int], list[ReadableSpan]]:
    exporter.clear()

    def finished(count: int) -> list[ReadableSpan]:
        """The spans ended so far, once there are ``count`` of them."""
        wait_until(lambda: len(exporter.get_finished_spans()) >= count, what=f"{count} spans")
        return list(exporter.get_finished_spans())

    return finished


def _one(found: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    [span] = [s for s in found if s.name == name and s.kind == kind]
    return span


def _parent_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.context is not None
    assert parent.context is not None
    assert child.parent is not None
    return (child.context.trace_id == parent.context.trace_id
            and child.parent.span_id == parent.context.span_id)  # fmt: skip


def test_a_task_runs_in_a_child_of_its_send_span(traced: SimpleNamespace, spans: Any) -> None:
    result = traced.add.delay(2, 3)
    assert result.get(timeout=WAIT) == 5

    found = spans(2)
    sent = _one(found, "send traced.add", SpanKind.PRODUCER)
    ran = _one(found, "run traced.add", SpanKind.CONSUMER)
    assert _parent_of(ran, sent)
    assert sent.attributes is not None
    assert ran.attributes is not None
    assert sent.attributes["caraway.task.id"] == ran.attributes["caraway.task.id"] == result.id
    assert ran.attributes["messaging.destination.name"] == "celery"
    assert ran.attributes["caraway.task.name"] == "traced.add"
    assert ran.attributes["caraway.task.retries"] == 0
    assert ran.attributes["caraway.task.state"] == states.SUCCESS
    assert ran.status.status_code == StatusCode.UNSET


def test_a_chains_second_task_is_a_child_of_the_first_tasks_run(
    traced: SimpleNamespace, spans: Any
) -> None:
    result = chain(traced.add.s(1, 1), traced.add.s(10)).delay()
    assert result.get(timeout=WAIT) == 12

    found = spans(4)
    sends = sorted(
        (s for s in found if s.kind == SpanKind.PRODUCER), key=lambda s: s.start_time or 0
    )
    runs = sorted(
        (s for s in found if s.kind == SpanKind.CONSUMER), key=lambda s: s.start_time or 0
    )
    assert len(sends) == len(runs) == 2
    assert _parent_of(runs[0], sends[0])
    assert _parent_of(sends[1], runs[0])  # the first task's run sends the second
    assert _parent_of(runs[1], sends[1])
    assert len({s.context.trace_id for s in found if s.context is not None}) == 1


def test_a_failure_is_an_error_span_with_the_exception(traced: SimpleNamespace, spans: Any) -> None:
    result = traced.boom.delay()
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=WAIT)

    ran = _one(spans(2), "run traced.boom", SpanKind.CONSUMER)
    assert ran.status.status_code == StatusCode.ERROR
    assert ran.attributes is not None
    assert ran.attributes["caraway.task.state"] == states.FAILURE
    [event] = ran.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"


def test_an_app_without_the_setting_sends_no_traceparent(tmp_path: Path) -> None:
    app = sqlite_app("untraced", tmp_path / "b.db")
    seen: list[dict[str, Any]] = []

    @app.task(name="untraced.noop")
    def noop() -> None:
        return None

    def record(headers: dict[str, Any], **kwargs: Any) -> None:
        seen.append(dict(headers))

    signals.before_task_publish.connect(record, weak=False)
    try:
        noop.delay()
    finally:
        signals.before_task_publish.disconnect(record)
        app.close()
    assert seen
    assert "traceparent" not in seen[0]
