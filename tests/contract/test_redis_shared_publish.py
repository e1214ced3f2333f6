"""Many threads publishing on one Redis broker share round trips, and each call still
returns only once Redis answered its own commands.

Each test runs its own ``redis-server`` on a free port, so the server's own counters
(``INFO stats``) count only this test's traffic, and killing it touches nobody else.
A caller is held at a known point by a ``BLPOP`` in flight on the shared connection: every
call made meanwhile queues behind it, so which calls share a write is not left to chance.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from polling import poll
from private_redis import PrivateRedis

from caraway import Caraway
from caraway.engines.redis.broker import RedisBroker
from caraway.engines.redis.shared import SharedLane
from caraway.exceptions import OperationalError, Unreachable
from caraway.serialization import json_loads

THREADS = 16
SENDS = 150
#: Bound on any one thread's work: generous for a loaded 2-core machine.
JOIN_WAIT = 60.0


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def app(server: PrivateRedis) -> Iterator[Caraway]:
    app = Caraway(
        "producers", broker=f"{server.url}/0", set_as_current=False, task_ignore_result=True,
        broker_transport_options={"global_keyprefix": "p:"},
    )  # fmt: skip
    try:
        yield app
    finally:
        app.close()


def _publisher(app: Caraway) -> SharedLane:
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    return broker._publisher


def _run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` in ``count`` threads at once; each one's return value or exception."""
    outcomes: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait(JOIN_WAIT)
        try:
            outcomes[i] = work(i)
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_WAIT)
    assert not any(thread.is_alive() for thread in threads), "a producer hangs"
    return outcomes


def _reads(client: redis.Redis) -> int:
    """The reads the server has done from its clients' sockets (one per batch it got)."""
    return int(client.info("stats")["total_reads_processed"])


def _queued(server: PrivateRedis, key: str) -> list[dict[str, Any]]:
    client = redis.Redis(port=server.port)
    try:
        return [json_loads(raw) for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()


def _hold_the_connection(lane: SharedLane, key: str) -> threading.Thread:
    """A caller whose BLPOP on ``key`` holds the shared connection until ``key`` gets a value."""
    thread = threading.Thread(target=lambda: lane.call(("BLPOP", key, 30)), daemon=True)
    thread.start()
    poll(lambda: lane.round_trips == 1, JOIN_WAIT, "the BLPOP to be written")
    return thread


def test_sixteen_threads_sends_all_land_once_with_their_bodies_in_fewer_round_trips(
    server: PrivateRedis, app: Caraway
) -> None:
    @app.task(name="producers.record")
    def record(thread: int, index: int) -> None: ...

    counter = redis.Redis(port=server.port)
    reads_before = _reads(counter)
    ids = _run_threads(THREADS, lambda t: [record.delay(t, i).id for i in range(SENDS)])

    sent = [task_id for per_thread in ids for task_id in per_thread]
    assert len(sent) == THREADS * SENDS
    queued = _queued(server, "p:celery")
    by_id = Counter(message["headers"]["id"] for message in queued)
    assert by_id == Counter(sent)  # every call's message there, exactly once
    bodies = {message["headers"]["id"]: json_loads(_body(message))[0] for message in queued}
    for thread, per_thread in enumerate(ids):
        assert [bodies[task_id] for task_id in per_thread] == [
            [thread, index] for index in range(SENDS)
        ]
    # Shared round trips: fewer writes than calls, on the lane and as the server read them.
    assert _publisher(app).round_trips < THREADS * SENDS
    assert _reads(counter) - reads_before < THREADS * SENDS
    counter.close()


def _body(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["body"])


def test_callers_that_queue_behind_a_busy_connection_go_out_in_one_write(
    server: PrivateRedis,
) -> None:
    client = redis.Redis(port=server.port)
    lane = SharedLane(client)
    gate, key = f"gate-{uuid.uuid4().hex}", f"list-{uuid.uuid4().hex}"
    try:
        held = _hold_the_connection(lane, gate)
        client.ping()  # connected before counting
        reads_before = _reads(client)
        results: list[Any] = [None] * THREADS
        threads = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, lane.call(("RPUSH", key, str(i)))),
                daemon=True,
            )
            for i in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        poll(lambda: len(lane._queue) == THREADS, JOIN_WAIT, "every caller to queue")
        client.rpush(gate, "open")
        for thread in [held, *threads]:
            thread.join(JOIN_WAIT)
        assert not any(thread.is_alive() for thread in [held, *threads])
        # The server read the sixteen in one go (besides the INFO and the RPUSH on the gate).
        assert _reads(client) - reads_before == 3

        assert lane.round_trips == 2  # the BLPOP, then all sixteen together
        assert sorted(client.lrange(key, 0, -1)) == sorted(str(i).encode() for i in range(16))
        assert sorted(reply for (reply,) in results) == list(range(1, THREADS + 1))
    finally:
        client.delete(gate, key)
        lane.close()
        client.close()


def test_an_error_reply_reaches_only_the_caller_whose_command_it_answers(
    server: PrivateRedis,
) -> None:
    client = redis.Redis(port=server.port)
    lane = SharedLane(client)
    gate, key, text = (f"{name}-{uuid.uuid4().hex}" for name in ("gate", "list", "text"))
    client.set(text, "not a list")
    try:
        held = _hold_the_connection(lane, gate)
        outcomes: list[Any] = [None] * 3
        targets = [key, text, key]

        def push(i: int) -> None:
            try:
                outcomes[i] = lane.call(("RPUSH", targets[i], "x"))
            except redis.RedisError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=push, args=(i,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        poll(lambda: len(lane._queue) == 3, JOIN_WAIT, "every caller to queue")
        client.rpush(gate, "open")
        for thread in [held, *threads]:
            thread.join(JOIN_WAIT)

        assert lane.round_trips == 2
        assert isinstance(outcomes[1], redis.ResponseError)
        assert "WRONGTYPE" in str(outcomes[1])
        assert sorted([outcomes[0], outcomes[2]]) == [[1], [2]]
        assert lane.call(("LLEN", key)) == [2]  # still in step
    finally:
        client.delete(gate, key, text)
        lane.close()
        client.close()


def test_redis_killed_under_waiting_producers_reaches_each_as_unreachable(
    server: PrivateRedis, app: Caraway
) -> None:
    @app.task(name="producers.noop")
    def noop() -> None: ...

    noop.delay()  # connected, bindings written
    lane = _publisher(app)
    gate = f"gate-{uuid.uuid4().hex}"
    held = threading.Thread(target=_blpop_ignoring_errors, args=(lane, gate), daemon=True)
    rounds = lane.round_trips
    held.start()
    poll(lambda: lane.round_trips == rounds + 1, JOIN_WAIT, "the BLPOP to be written")

    def send(_: int) -> Any:
        return noop.apply_async(retry=False)

    waiting: list[Any] = []
    runner = threading.Thread(
        target=lambda: waiting.extend(_run_threads(THREADS, send)), daemon=True
    )
    runner.start()
    poll(lambda: len(lane._queue) == THREADS, JOIN_WAIT, "every producer to queue")
    server.kill()
    runner.join(JOIN_WAIT)
    held.join(JOIN_WAIT)

    assert not runner.is_alive()
    assert len(waiting) == THREADS
    assert all(isinstance(outcome, Unreachable) for outcome in waiting), waiting
    assert all(isinstance(outcome, OperationalError) for outcome in waiting)
    assert all(server.url.removeprefix("redis://") in str(outcome) for outcome in waiting)


def _blpop_ignoring_errors(lane: SharedLane, key: str) -> None:
    with contextlib.suppress(redis.RedisError):  # its own error is not what is tested
        lane.call(("BLPOP", key, 30))


class _Interrupted(Exception):
    """Raised inside a waiting producer thread, as a signal handler's exception would be."""


def test_a_caller_interrupted_when_handed_the_lead_passes_it_on_unsent(
    server: PrivateRedis,
) -> None:
    client = redis.Redis(port=server.port)
    lane = SharedLane(client)
    gate, key = f"gate-{uuid.uuid4().hex}", f"list-{uuid.uuid4().hex}"
    outcomes: dict[str, Any] = {}

    def push(name: str) -> None:
        try:
            outcomes[name] = lane.call(("RPUSH", key, name))
        except _Interrupted as exc:
            outcomes[name] = exc

    try:
        held = _hold_the_connection(lane, gate)
        first = threading.Thread(target=push, args=("first",), daemon=True)
        first.start()
        poll(lambda: len(lane._queue) == 1, JOIN_WAIT, "the first caller to queue")
        second = threading.Thread(target=push, args=("second",), daemon=True)
        second.start()
        poll(lambda: len(lane._queue) == 2, JOIN_WAIT, "the second caller to queue")
        # Delivered when the first caller's wait returns: the moment it is handed the lead.
        assert first.ident is not None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(first.ident), ctypes.py_object(_Interrupted)
        )
        client.rpush(gate, "open")
        for thread in (held, first, second):
            thread.join(JOIN_WAIT)
        assert not any(thread.is_alive() for thread in (held, first, second))

        assert isinstance(outcomes["first"], _Interrupted)
        assert outcomes["second"] == [1]
        assert client.lrange(key, 0, -1) == [b"second"]  # the interrupted call never went out
        assert lane.call(("LLEN", key)) == [1]  # and nobody waits for a lead that is gone
    finally:
        client.delete(gate, key)
        lane.close()
        client.close()
