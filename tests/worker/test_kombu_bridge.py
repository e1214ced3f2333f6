"""A real caraway worker on the kombu bridge: tasks sent by caraway through kombu's memory
transport, and by a Celery client through kombu's filesystem transport and its SQS transport
against moto's server (Celery's own settings), results read by both (in memcached)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
from moto_sqs import TRANSPORT_OPTIONS, session_moto
from private_memcached import session_memcached
from worker_support import WAIT, ThreadedWorker

from caraway import Celery, group


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """kombu remembers in the process which queues it has bound, so the filesystem folders
    are one set for the module, as for every process of a deployment."""
    made = Path(tempfile.mkdtemp(prefix="caraway-kombu-worker-"))
    (made / "messages").mkdir()
    (made / "control").mkdir()
    yield made
    shutil.rmtree(made, ignore_errors=True)


def _filesystem_options(folder: Path) -> dict[str, Any]:
    messages = str(folder / "messages")
    return {"data_folder_in": messages, "data_folder_out": messages,
            "control_folder": str(folder / "control")}  # fmt: skip


def _app(broker: str, backend: str, **conf: Any) -> Celery:
    app = Celery("kombu-bridge", broker=broker, backend=backend, **conf)

    @app.task(name="kb.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="kb.flaky", bind=True, max_retries=2)
    def flaky(self: Any) -> int:
        if self.request.retries < 1:
            raise self.retry(countdown=0.2)
        return self.request.retries

    return app


def test_caraway_sends_and_runs_through_kombus_memory_transport() -> None:
    app = _app("kombu+memory://", "cache+memory://", task_default_queue=f"kb-{uuid.uuid4().hex}")
    worker = ThreadedWorker(app, concurrency=2).start()
    try:
        assert app.tasks["kb.add"].delay(2, 3).get(timeout=WAIT) == 5
        assert app.tasks["kb.flaky"].delay().get(timeout=WAIT) == 1  # a countdown, held
        members = group(app.tasks["kb.add"].s(n, n) for n in range(10)).apply_async()
        assert members.get(timeout=WAIT) == [2 * n for n in range(10)]
    finally:
        worker.stop()
        app.close()


def test_a_celery_client_on_filesystem_feeds_a_caraway_worker(folder: Path) -> None:
    results = session_memcached().url  # a store both read: tests/interop/test_interop_memcached
    queue = f"kb-fs-{uuid.uuid4().hex[:8]}"
    ours = _app("filesystem://", results, broker_transport_options=_filesystem_options(folder),
                task_default_queue=queue)  # fmt: skip
    theirs = celery.Celery("kombu-bridge", broker="filesystem://", backend=results,
                           set_as_current=False)  # fmt: skip
    theirs.conf.broker_transport_options = _filesystem_options(folder)
    # Sent before the worker polls: kombu's filesystem transport can read a file its writer
    # has not filled yet (kombu #1551), a race of kombu's own that this test does not measure.
    sent = [theirs.send_task("kb.add", (n, 1), queue=queue) for n in range(5)]
    worker = ThreadedWorker(ours, concurrency=2).start()
    try:
        assert [result.get(timeout=WAIT) for result in sent] == [n + 1 for n in range(5)]
        assert ours.AsyncResult(sent[0].id).get(timeout=WAIT) == 1
    finally:
        worker.stop()
        ours.close()
        theirs.backend.client.disconnect_all()  # python-memcached's sockets: Celery keeps them
        theirs.close()


def test_a_celery_client_on_sqs_feeds_a_caraway_worker_and_reads_the_results() -> None:
    """The issue's case: Celery's ``sqs://`` settings, moto's server as the local SQS."""
    sqs, results = session_moto(), session_memcached().url
    queue = f"kb-sqs-{uuid.uuid4().hex[:8]}"
    ours = _app(sqs.url, results, broker_transport_options=dict(TRANSPORT_OPTIONS),
                task_default_queue=queue)  # fmt: skip
    theirs = celery.Celery("kombu-bridge", broker=sqs.url, backend=results, set_as_current=False)
    theirs.conf.broker_transport_options = dict(TRANSPORT_OPTIONS)
    worker = ThreadedWorker(ours, concurrency=2).start()
    try:
        sent = theirs.send_task("kb.add", (20, 22), queue=queue)
        retried = theirs.send_task("kb.flaky", queue=queue)  # retried through SQS once

        assert sent.get(timeout=WAIT) == 42
        assert retried.get(timeout=WAIT) == 1
        assert ours.broker.size(queue) == 0
    finally:
        worker.stop()
        ours.close()
        theirs.backend.client.disconnect_all()  # python-memcached's sockets: Celery keeps them
        theirs.close()
