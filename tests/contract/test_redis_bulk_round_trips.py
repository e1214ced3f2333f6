"""A group's and ``chunks``' members go to Redis as ``send_batch`` sends them: one write
(one multi-value LPUSH) per ``BATCH_CHUNK`` messages, not one round trip per member.

Counted on a ``redis-server`` of the test's own, whose ``INFO commandstats`` holds only
this test's commands.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from private_redis import PrivateRedis

from caraway import Caraway, chunks, group
from caraway.calling import BATCH_CHUNK
from caraway.engines.redis.broker import RedisBroker
from caraway.serialization import json_loads


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def client(server: PrivateRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port)
    yield client
    client.close()


@pytest.fixture
def app(server: PrivateRedis) -> Iterator[Caraway]:
    app = Caraway("bulk", broker=f"{server.url}/0", set_as_current=False, task_ignore_result=True)
    try:
        yield app
    finally:
        app.close()


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def _queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The messages in the default queue, oldest (next out) first."""
    return [json_loads(raw) for raw in reversed(client.lrange("celery", 0, -1))]


def test_a_group_is_published_one_write_per_chunk_of_members(
    app: Caraway, client: redis.Redis
) -> None:
    @app.task(name="bulk.add")
    def add(x: int, y: int) -> int:
        return x + y

    size = 2 * BATCH_CHUNK + 500
    broker = app.broker
    assert isinstance(broker, RedisBroker)

    result = group(add.s(i, i) for i in range(size)).apply_async()

    assert broker._publisher.round_trips == 3
    assert _calls(client, "lpush") == 3
    queued = _queued(client)
    assert [m["headers"]["id"] for m in queued] == [r.id for r in result.results]
    assert {m["headers"]["group"] for m in queued} == {result.id}
    assert [m["headers"]["group_index"] for m in queued] == list(range(size))
    assert [json_loads(base64.b64decode(m["body"]))[0] for m in queued] == [
        [i, i] for i in range(size)
    ]


def test_chunks_send_all_their_parts_in_one_write(app: Caraway, client: redis.Redis) -> None:
    @app.task(name="bulk.add")
    def add(x: int, y: int) -> int:
        return x + y

    broker = app.broker
    assert isinstance(broker, RedisBroker)

    result = chunks(add.s(), [(i, i) for i in range(100)], 10).apply_async()

    assert broker._publisher.round_trips == 1
    assert _calls(client, "lpush") == 1
    queued = _queued(client)
    assert len(queued) == len(result.results) == 10
    assert [m["headers"]["task"] for m in queued] == ["celery.starmap"] * 10
    parts = [json_loads(base64.b64decode(m["body"]))[1]["it"] for m in queued]
    assert [item for part in parts for item in part] == [[i, i] for i in range(100)]
