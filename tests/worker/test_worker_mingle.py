"""``--without-mingle`` on RabbitMQ (whose revocations are a fanout, heard only by workers
already bound): a new worker asks its peers for revoked ids, unless told not to."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqp_support import rabbit_vhost
from worker_support import WAIT

from caraway import Celery


@pytest.fixture
def app() -> Iterator[Celery]:
    with rabbit_vhost("mingle") as url:
        app = Celery("mingle", broker=url, backend="rpc://", set_as_current=False)
        yield app
        app.close()


def test_a_worker_without_mingle_does_not_learn_revoked_ids(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    host = socket.gethostname()
    start_worker(app, hostname="first@%h")
    assert app.control.revoke("revoked-before", reply=True, timeout=WAIT, limit=1)
    start_worker(app, hostname="mingled@%h")
    start_worker(app, hostname="alone@%h", without_mingle=True)

    revoked = app.control.inspect(timeout=WAIT, limit=3).revoked() or {}

    assert "revoked-before" in revoked[f"first@{host}"]
    assert "revoked-before" in revoked[f"mingled@{host}"]  # learned from first at startup
    assert "revoked-before" not in revoked[f"alone@{host}"]
