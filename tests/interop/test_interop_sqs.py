"""Celery 5.7 and caraway on the same Amazon SQS queues (moto's server as the local SQS),
both configured the way Celery's guides show: ``broker_url = "sqs://key:secret@host:port"``
with ``broker_transport_options``. caraway goes through its kombu bridge; the Celery worker
through kombu's SQS transport (boto3 to send, pycurl to receive). Results live in one
memcached both read.

One Celery worker consumes ``to-celery``, one caraway worker ``to-caraway``, and both
``mixed``, for the whole module. The in-process caraway worker fed by a Celery client over
SQS is tests/worker/test_kombu_bridge.py.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import WAIT, Wire, Workers, close_celery_app, read_markers, wait_until
from moto_sqs import TRANSPORT_OPTIONS, session_moto
from private_memcached import session_memcached

from caraway import group

#: Queues of this module's run: moto's server lives for the whole test process.
RUN = uuid.uuid4().hex[:6]
TO_CELERY, TO_CARAWAY, MIXED = f"to-celery-{RUN}", f"to-caraway-{RUN}", f"mixed-{RUN}"


@pytest.fixture(scope="module")
def wire() -> Wire:
    """SQS for the module's workers and clients (overrides the Redis/RabbitMQ wires)."""
    return Wire("sqs", session_moto().url, session_memcached().url, dict(TRANSPORT_OPTIONS))


@pytest.fixture(scope="module")
def started(workers: Workers) -> Workers:
    workers.start("celery", f"{TO_CELERY},{MIXED}", ready=False)
    workers.start("caraway", f"{TO_CARAWAY},{MIXED}", ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


@pytest.fixture(scope="module")
def ours(project: Path, wire: Wire) -> Iterator[Any]:
    app = importlib.import_module("caraway_side").build(wire.broker, wire.backend, wire.transport)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def theirs(project: Path, wire: Wire) -> Iterator[Any]:
    app = importlib.import_module("celery_side").build(wire.broker, wire.backend, wire.transport)
    try:
        yield app
    finally:
        app.backend.client.disconnect_all()  # python-memcached's sockets: Celery keeps them
        close_celery_app(app)


# --- caraway client -> Celery worker -----------------------------------------------------------


def test_caraway_sends_over_sqs_and_a_celery_worker_runs_it(
    started: Workers, ours: Any, theirs: Any, marker_dir: Path
) -> None:
    add, echo = ours.tasks["interop.add"], ours.tasks["interop.echo"]
    tag = uuid.uuid4().hex

    plain = add.apply_async((20, 22), queue=TO_CELERY)
    sent = time.monotonic()
    later = add.apply_async((1, 1), queue=TO_CELERY, countdown=1)
    linked = add.apply_async((2, 5), queue=TO_CELERY, link=echo.s(tag=tag).set(queue=TO_CELERY))

    assert plain.get(timeout=WAIT) == 42
    assert linked.get(timeout=WAIT) == 7
    assert later.get(timeout=WAIT) == 2
    assert time.monotonic() - sent >= 0.9  # the Celery worker held the countdown
    assert wait_until(lambda: read_markers(marker_dir, "echo", tag)) == [("7", "celery")]
    assert theirs.AsyncResult(plain.id).get(timeout=WAIT) == 42


def test_a_caraway_group_is_one_batch_the_celery_worker_runs_member_by_member(
    started: Workers, ours: Any
) -> None:
    add = ours.tasks["interop.add"]

    members = group(add.s(n, n).set(queue=TO_CELERY) for n in range(8)).apply_async()

    assert members.get(timeout=WAIT) == [2 * n for n in range(8)]


def test_a_celery_workers_failure_reraises_in_the_caraway_client(
    started: Workers, ours: Any
) -> None:
    import interop_errors

    result = ours.tasks["interop.fail"].apply_async(("quota", "over quota"), queue=TO_CELERY)

    with pytest.raises(interop_errors.QuotaExceeded) as caught:
        result.get(timeout=WAIT)
    assert caught.value.args == ("over quota", 7)
    assert result.state == "FAILURE"


# --- Celery client -> caraway worker (the CLI worker, Celery's settings) ----------------------


def test_a_celery_client_feeds_the_caraway_worker_over_sqs(
    started: Workers, ours: Any, theirs: Any
) -> None:
    import interop_errors

    done = theirs.tasks["interop.tsum"].apply_async(([1, 2, 3],), queue=TO_CARAWAY)
    failed = theirs.tasks["interop.fail"].apply_async(("quota", "over quota"), queue=TO_CARAWAY)

    assert done.get(timeout=WAIT) == {"sum": 6, "by": "caraway"}
    with pytest.raises(interop_errors.QuotaExceeded):
        failed.get(timeout=WAIT)
    assert ours.AsyncResult(done.id).get(timeout=WAIT) == {"sum": 6, "by": "caraway"}
    assert ours.broker.size(TO_CARAWAY) == 0


# --- both workers on one SQS queue -----------------------------------------------------------


def test_a_mixed_pool_on_one_sqs_queue_runs_every_message_once(
    started: Workers, ours: Any, theirs: Any, marker_dir: Path
) -> None:
    n, tag = 24, uuid.uuid4().hex

    for i in range(n):
        client = theirs if i % 2 else ours
        client.tasks["interop.slow"].apply_async((i, 0.05, tag), queue=MIXED)

    wait_until(lambda: len(read_markers(marker_dir, "done", tag)) >= n, WAIT, f"{n} tasks")
    time.sleep(0.5)  # room for a duplicate to show up
    done = read_markers(marker_dir, "done", tag)
    assert Counter(int(i) for i, _lib in done) == Counter(range(n))
    assert {lib for _i, lib in done} == {"celery", "caraway"}
    assert ours.broker.size(MIXED) == 0
