"""The asyncio client API on real engines: ``delay_async``/``send_async`` publish and
``get_async`` waits without blocking the event loop (a ticker keeps ticking meanwhile)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import services

from caraway import Celery
from caraway.contrib.testing.worker import start_worker
from caraway.exceptions import TimeoutError


@pytest.fixture(params=["redis", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    if request.param == "redis":
        host, port = services.require("redis")
        prefix = f"aio-{uuid.uuid4().hex[:10]}:"
        url = f"redis://{host}:{port}/0"
        options = {"global_keyprefix": prefix}
        made = Celery(
            "aio", broker=url, backend=url, broker_transport_options=options,
            result_backend_transport_options=options, set_as_current=False,
        )  # fmt: skip
    else:
        url = f"sqlite:///{tmp_path / 'aio.sqlite3'}"
        made = Celery("aio", broker=url, backend=url, set_as_current=False)
    try:
        yield made
    finally:
        made.close()
        if request.param == "redis":
            client = redis.Redis(host=host, port=port, db=0)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def _tasks(app: Celery) -> Any:
    @app.task(name="aio.slow_add", shared=False)
    def slow_add(x: int, y: int) -> int:
        time.sleep(0.3)
        return x + y

    @app.task(name="aio.fail", shared=False)
    def fail() -> None:
        raise KeyError("nope")

    return slow_add, fail


async def _ticking(work: Any) -> tuple[Any, int]:
    """Run ``work`` while a ticker counts 5 ms sleeps: a blocked loop would stop it."""
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        return await work, ticks
    finally:
        done.set()
        await ticker


def test_send_and_wait_without_blocking_the_loop(app: Celery, monkeypatch: Any) -> None:
    slow_add, _ = _tasks(app)

    def no_blocking_publish(batch: Any) -> None:
        raise AssertionError("the awaitable send used the blocking publish")

    with start_worker(app, pool="threads", concurrency=2):
        if app.conf.broker_url.startswith("redis"):  # Redis has an asyncio client: no threads
            monkeypatch.setattr(app.broker, "publish", no_blocking_publish)

        async def flow() -> int:
            result = await slow_add.delay_async(2, 3)
            value: int = await result.get_async(timeout=10)
            return value

        value, ticks = asyncio.run(_ticking(flow()))

    assert value == 5
    assert ticks >= 20  # 0.3 s of task time: about 60 ticks when the loop is free


def test_send_async_takes_apply_async_options_and_failures_propagate(app: Celery) -> None:
    slow_add, fail = _tasks(app)

    async def flow() -> tuple[Any, Any, Any]:
        later = await slow_add.send_async((1, 1), countdown=0.2, queue="celery")
        failing = await fail.delay_async()
        with pytest.raises(KeyError, match="nope"):
            await failing.get_async(timeout=10)
        as_value = await failing.get_async(timeout=10, propagate=False)
        return await later.get_async(timeout=10), as_value, later

    with start_worker(app, pool="threads", concurrency=2):
        started = time.monotonic()
        value, as_value, later = asyncio.run(flow())

    assert value == 2
    assert isinstance(as_value, KeyError)
    assert time.monotonic() - started >= 0.2  # the countdown was honoured
    assert later.state == "SUCCESS"


def test_get_async_times_out_with_no_worker(app: Celery) -> None:
    _tasks(app)

    async def flow() -> None:
        result = await app.send_task_async("aio.slow_add", (1, 2))
        with pytest.raises(TimeoutError):
            await result.get_async(timeout=0.3)

    started = time.monotonic()
    asyncio.run(flow())
    assert time.monotonic() - started < 5
    assert app.broker.size("celery") == 1  # it was published, and waits for a worker


@pytest.mark.parametrize("app", ["redis"], indirect=True)  # the engine with an asyncio client
def test_redis_async_calls_share_one_client_per_loop_closed_with_the_loop(app: Celery) -> None:
    slow_add, _ = _tasks(app)

    async def flow() -> tuple[list[int], Any]:
        results = [await slow_add.delay_async(n, n) for n in range(4)]
        values = [await result.get_async(timeout=10) for result in results]
        client = await app.broker._async_clients.get()
        assert client is await app.broker._async_clients.get()
        return values, client.connection_pool

    with start_worker(app, pool="threads", concurrency=4):
        values, pool = asyncio.run(flow())

    assert values == [0, 2, 4, 6]
    # Four sends on one connection (not one each), and asyncio.run closed it with its loop.
    assert len(pool._available_connections) + len(pool._in_use_connections) == 1
    assert not any(conn.is_connected for conn in pool._available_connections)
