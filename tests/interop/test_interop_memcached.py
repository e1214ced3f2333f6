"""Celery and caraway share results on one memcached (Celery's ``cache+memcached://`` backend
with python-memcached, caraway's with pymemcache): each reads what the other stored.

Only the result keys are shared: Celery's chord join on memcached (a ``chord-unlock-<gid>``
counter set by the client) is not caraway's (``celery.chord_unlock`` polls), so one chord's
header cannot be split between Celery and caraway workers there (docs/backends.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import celery
import pytest
from private_memcached import PrivateMemcached

from caraway import Caraway
from caraway.contrib.testing.worker import start_worker

WAIT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateMemcached]:
    memcached = PrivateMemcached()
    try:
        yield memcached
    finally:
        memcached.stop()


@pytest.fixture
def apps(server: PrivateMemcached) -> Iterator[tuple[Caraway, Any]]:
    ours = Caraway("mc-interop", broker=f"memory://mc-{uuid.uuid4().hex}", backend=server.url,
                   set_as_current=False)  # fmt: skip
    theirs = celery.Celery("mc-interop", broker="memory://", backend=server.url,
                           set_as_current=False)  # fmt: skip
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.backend.client.disconnect_all()  # python-memcached's sockets: Celery keeps them
        theirs.close()


def test_celery_reads_a_result_a_caraway_worker_stored(apps: tuple[Caraway, Any]) -> None:
    ours, theirs = apps

    @ours.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(ours, pool="solo", perform_ping_check=False):
        result = add.delay(20, 22)
        assert result.get(timeout=WAIT) == 42

    read = theirs.AsyncResult(result.id)
    assert (read.state, read.result) == ("SUCCESS", 42)


def test_caraway_reads_celerys_success_and_failure(apps: tuple[Caraway, Any]) -> None:
    ours, theirs = apps
    done, failed = str(uuid.uuid4()), str(uuid.uuid4())
    theirs.backend.store_result(done, {"rows": [1, 2]}, "SUCCESS")
    theirs.backend.mark_as_failure(failed, KeyError("gone"), "Traceback: ...")

    assert ours.AsyncResult(done).get(timeout=WAIT) == {"rows": [1, 2]}
    with pytest.raises(KeyError, match="gone"):
        ours.AsyncResult(failed).get(timeout=WAIT)


def test_a_celery_success_is_not_overwritten_by_a_late_caraway_state(
    apps: tuple[Caraway, Any],
) -> None:
    ours, theirs = apps
    task_id = str(uuid.uuid4())
    theirs.backend.store_result(task_id, 1, "SUCCESS")

    ours.backend.store_result(task_id, {"pid": 1}, "STARTED")

    assert theirs.AsyncResult(task_id).state == "SUCCESS"
