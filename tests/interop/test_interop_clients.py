"""A Celery client feeds a caraway worker, a caraway client feeds a real Celery worker, and
each side reads the other's results, failures included (docs/celery-wire.md §8.1-§8.4).

One caraway worker consumes ``to.caraway`` and one Celery worker consumes ``to.celery``, for
the whole module, on each wire (Redis with Redis results; RabbitMQ with rpc:// results).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from interop_support import WAIT, Wire, Workers, read_markers, wait_until
from otel_support import in_memory_exporter

TO_CARAWAY = "to.caraway"
TO_CELERY = "to.celery"


@pytest.fixture(scope="module")
def started(workers: Workers) -> Workers:
    workers.start("caraway", TO_CARAWAY, ready=False)
    workers.start("celery", TO_CELERY, ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


# --- Celery client -> caraway worker ---------------------------------------------------------


def test_celery_delay_runs_on_caraway_and_celery_reads_the_result(
    started: Workers, celery_client: Any
) -> None:
    add = celery_client.tasks["interop.add"]

    result = add.apply_async((2, 3), queue=TO_CARAWAY)

    assert result.get(timeout=WAIT) == 5
    assert result.state == "SUCCESS"


def test_celery_apply_async_options_on_caraway(
    started: Workers, celery_client: Any, marker_dir: Path
) -> None:
    add = celery_client.tasks["interop.add"]
    echo = celery_client.tasks["interop.echo"]
    tag = uuid.uuid4().hex

    sent = time.monotonic()
    later = add.apply_async((1, 1), queue=TO_CARAWAY, countdown=1)
    expiring = add.apply_async((2, 2), queue=TO_CARAWAY, expires=60)
    urgent = add.apply_async((3, 3), queue=TO_CARAWAY, priority=9)
    linked = add.apply_async((1, 2), queue=TO_CARAWAY, link=echo.s(tag=tag).set(queue=TO_CARAWAY))

    assert expiring.get(timeout=WAIT) == 4
    assert urgent.get(timeout=WAIT) == 6
    assert linked.get(timeout=WAIT) == 3
    assert later.get(timeout=WAIT) == 2
    assert time.monotonic() - sent >= 0.9
    # The callback ran with the parent's result prepended, on the caraway worker.
    assert wait_until(lambda: read_markers(marker_dir, "echo", tag)) == [("3", "caraway")]


def test_celery_client_sees_an_expired_task_revoked_by_caraway(
    started: Workers, celery_client: Any
) -> None:
    from celery.exceptions import TaskRevokedError

    add = celery_client.tasks["interop.add"]

    result = add.apply_async((5, 5), queue=TO_CARAWAY, countdown=2, expires=1)

    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=WAIT)
    assert result.state == "REVOKED"


# --- caraway client -> Celery worker ---------------------------------------------------------


@pytest.fixture(scope="module")
def reader(caraway_client: Any) -> Any:
    """The caraway client, after a first read of a result (a PENDING one)."""
    assert caraway_client.AsyncResult(str(uuid.uuid4())).state == "PENDING"
    return caraway_client


def test_a_celery_workers_reply_reaches_a_caraway_client_that_never_read_before(
    started: Workers, wire: Wire, marker_dir: Path
) -> None:
    """On rpc:// the reply queue is declared when the first task is sent, as Celery does."""
    import caraway_side

    app = caraway_side.build(wire.broker, wire.backend, wire.transport, wire.result_transport)
    try:
        tag = uuid.uuid4().hex
        result = app.tasks["interop.echo"].apply_async((1,), {"tag": tag}, queue=TO_CELERY)
        wait_until(lambda: read_markers(marker_dir, "echo", tag))
        time.sleep(0.2)  # the reply is sent just after the task returns

        assert result.get(timeout=5) == {"value": 1, "by": "celery"}
    finally:
        app.close()


def test_caraway_delay_runs_on_celery_and_caraway_reads_the_result(
    started: Workers, reader: Any, marker_dir: Path
) -> None:
    add = reader.tasks["interop.add"]
    echo = reader.tasks["interop.echo"]
    tag = uuid.uuid4().hex

    plain = add.apply_async((20, 22), queue=TO_CELERY)
    later = add.apply_async((1, 1), queue=TO_CELERY, countdown=1, expires=60, priority=5)
    linked = add.apply_async((2, 5), queue=TO_CELERY, link=echo.s(tag=tag).set(queue=TO_CELERY))

    assert plain.get(timeout=WAIT) == 42
    assert later.get(timeout=WAIT) == 2
    assert linked.get(timeout=WAIT) == 7
    assert plain.state == "SUCCESS"
    assert wait_until(lambda: read_markers(marker_dir, "echo", tag)) == [("7", "celery")]


def test_a_celery_worker_runs_a_traced_caraway_message(
    started: Workers, wire: Wire, marker_dir: Path
) -> None:
    """Celery ignores the ``traceparent`` header it does not know (docs/metrics.md)."""
    import caraway_side

    exporter = in_memory_exporter()
    app = caraway_side.build(wire.broker, wire.backend, wire.transport, wire.result_transport)
    app.conf.opentelemetry_tracing = True
    try:
        result = app.tasks["interop.add"].apply_async((4, 5), queue=TO_CELERY)

        assert result.get(timeout=WAIT) == 9
    finally:
        app.close()
    [sent] = [span for span in exporter.get_finished_spans() if span.name == "send interop.add"]
    assert sent.attributes is not None
    assert sent.attributes["caraway.task.id"] == result.id


# --- failures, both ways -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"), [("value", "ValueError"), ("quota", "QuotaExceeded")]
)
@pytest.mark.parametrize("direction", ["celery->caraway", "caraway->celery"])
def test_a_failure_reraises_the_same_exception_on_the_other_side(
    started: Workers,
    celery_client: Any,
    reader: Any,
    direction: str,
    kind: str,
    expected: str,
) -> None:
    import interop_errors

    client, queue = (
        (celery_client, TO_CARAWAY) if direction == "celery->caraway" else (reader, TO_CELERY)
    )
    fail = client.tasks["interop.fail"]
    expected_type = ValueError if kind == "value" else interop_errors.QuotaExceeded

    result = fail.apply_async((kind, "over quota"), queue=queue)

    with pytest.raises(expected_type) as caught:
        result.get(timeout=WAIT)
    assert caught.value.args[0] == "over quota"
    if kind == "quota":
        assert caught.value.args == ("over quota", 7)
    assert result.state == "FAILURE"
    assert expected in (result.traceback or "")
