"""A large group's results on Redis are read in batches, not one request per member."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from services import require

from caraway import Celery
from caraway.engines.redis.backend import MGET_CHUNK
from caraway.result import GroupResult


@pytest.fixture
def app() -> Iterator[Celery]:
    host, port = require("redis")
    prefix = f"groupreads-{uuid.uuid4().hex[:8]}:"
    app = Celery(
        "groupreads", broker="memory://", backend=f"redis://{host}:{port}/1",
        result_backend_transport_options={"global_keyprefix": prefix}, set_as_current=False,
    )  # fmt: skip
    yield app
    raw = redis.Redis(host=host, port=port, db=1)
    keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        raw.delete(*keys)
    raw.close()
    app.close()


def test_state_and_join_of_2500_members_take_one_mget_per_thousand(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    ids = [str(uuid.uuid4()) for _ in range(2500)]
    for n, task_id in enumerate(ids):
        backend.mark_as_done(task_id, n)
    group = GroupResult(str(uuid.uuid4()), [app.AsyncResult(task_id) for task_id in ids], app=app)
    sent: list[str] = []
    call = backend._lane.call

    def counted(*commands: Any) -> list[Any]:
        sent.extend(str(command[0]) for command in commands)
        return call(*commands)

    monkeypatch.setattr(backend._lane, "call", counted)

    assert group.ready()
    assert group.join(timeout=10) == list(range(2500))
    assert sent == ["MGET"] * -(-2500 // MGET_CHUNK)  # ready() read them; join() had them
