"""Expired and revoked tasks are not run: they are acked and stored as REVOKED."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, make_app, wait_until

from caraway import Celery, states
from caraway.exceptions import TaskRevokedError

BROKERS = ["memory", "sqlite"]


def counting_app(broker: str, path: Path) -> tuple[Celery, Any, list[int]]:
    app = make_app(broker, f"revoke-{broker}", path)
    runs: list[int] = []

    @app.task
    def add(x: int, y: int) -> int:
        runs.append(x + y)
        return x + y

    return app, add, runs


@pytest.mark.parametrize("broker", BROKERS)
def test_a_task_past_its_expiry_is_revoked_not_run(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app, add, runs = counting_app(broker, tmp_path / "b.sqlite3")
    start_worker(app, pool="solo")

    expired = add.apply_async((1, 2), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    # Due after its expiry: it expires while waiting for its ETA.
    expires_first = add.apply_async((2, 2), countdown=0.3, expires=0.1)
    fine = add.apply_async((3, 3), expires=60)

    assert fine.get(timeout=WAIT) == 6
    for result in (expired, expires_first):
        with pytest.raises(TaskRevokedError, match="expired"):
            result.get(timeout=WAIT)
        assert result.state == states.REVOKED
    assert runs == [6]
    assert app.broker.size("celery") == 0


@pytest.mark.parametrize("broker", BROKERS)
def test_a_task_expiring_while_it_waits_for_a_pool_slot_is_revoked_not_run(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app, add, runs = counting_app(broker, tmp_path / "b.sqlite3")
    entered, release = threading.Event(), threading.Event()

    @app.task
    def hold() -> None:
        entered.set()
        assert release.wait(WAIT)

    start_worker(app, pool="threads", concurrency=1)
    busy = hold.delay()
    assert entered.wait(WAIT)
    # Prefetched at once (the window has room) while the one slot is busy.
    late = add.apply_async((1, 2), expires=0.3)
    wait_until(lambda: app.broker.size("celery") == 0, what="the prefetch")
    time.sleep(0.5)  # it expires while it waits in the worker
    release.set()

    busy.get(timeout=WAIT)
    with pytest.raises(TaskRevokedError, match="expired"):
        late.get(timeout=WAIT)
    assert runs == []


@pytest.mark.parametrize("broker", BROKERS)
def test_revoke_before_a_worker_starts_is_honoured_by_it(
    broker: str, tmp_path: Path, start_worker: Any
) -> None:
    app, add, runs = counting_app(broker, tmp_path / "b.sqlite3")
    doomed = add.delay(1, 1)
    kept = add.delay(2, 2)
    app.control.revoke(doomed.id)

    start_worker(app, pool="solo")

    assert kept.get(timeout=WAIT) == 4
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=WAIT)
    assert doomed.state == states.REVOKED
    assert runs == [4]
    assert app.broker.size("celery") == 0


def test_revoke_reaches_a_running_worker_before_the_task_arrives(
    tmp_path: Path, start_worker: Any
) -> None:
    app, add, runs = counting_app("sqlite", tmp_path / "b.sqlite3")
    worker = start_worker(app, pool="threads", concurrency=2)
    task_id = str(uuid.uuid4())

    app.control.revoke(task_id)
    wait_until(lambda: worker.state.is_revoked(task_id), what="the worker to learn the revoke")
    result = add.apply_async((5, 5), task_id=task_id)

    with pytest.raises(TaskRevokedError):
        result.get(timeout=WAIT)
    assert result.state == states.REVOKED
    assert add.delay(1, 1).get(timeout=WAIT) == 2
    assert runs == [2]


@pytest.mark.parametrize("elsewhere", [states.STARTED, "PROGRESS"])
def test_a_revoke_stores_revoked_at_once_but_keeps_a_task_started_elsewhere(
    tmp_path: Path, start_worker: Any, elsewhere: str
) -> None:
    app, _, _ = counting_app("sqlite", tmp_path / "b.sqlite3")
    start_worker(app, pool="threads", concurrency=2)
    started, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    # Another worker runs ``started``; no worker has met ``waiting`` yet.
    app.backend.store_result(started, {"hostname": "other@host"}, elsewhere)

    assert app.control.revoke([started, waiting], reply=True, timeout=WAIT, limit=1)

    assert app.backend.get_state(started) == elsewhere
    assert app.backend.get_state(waiting) == states.REVOKED
