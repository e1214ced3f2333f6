"""A chord on Redis leaves Celery 5.7's join keys (docs/celery-wire.md §6.5), midway and after."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
import redis
from services import delete_redis_prefixed, require
from worker_support import WAIT, ThreadedWorker, wait_until

from caraway import Celery, chord


def test_a_chord_keeps_celerys_join_keys_midway_and_only_done_after() -> None:
    host, port = require("redis")
    prefix = f"chordkeys-{uuid.uuid4().hex[:8]}:"
    app = Celery(
        "chordkeys", broker=f"redis://{host}:{port}/0", backend=f"redis://{host}:{port}/1",
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
    )  # fmt: skip
    gate = threading.Event()
    results = redis.Redis(host=host, port=port, db=1, decode_responses=True)

    @app.task(name="keys.one")
    def one() -> int:
        return 1

    @app.task(name="keys.held")
    def held() -> int:
        assert gate.wait(WAIT)
        return 2

    @app.task(name="keys.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
    try:
        result = chord([one.si(), held.si()], tsum.s()).apply_async()
        gid = result.parent.id
        first = result.parent.results[0].id
        key = f"{prefix}celery-taskset-meta-{gid}"

        wait_until(lambda: results.exists(key + ".j"), what="the first part joined")
        midway: dict[str, Any] = {
            "d": results.smembers(key + ".d"),
            "j": results.zrange(key + ".j", 0, -1, withscores=True),
            "s": results.get(key + ".s"),
        }
        gate.set()
        assert result.get(timeout=WAIT) == 3

        assert midway["d"] == {f"{first}:0"}
        assert [(json.loads(m), score) for m, score in midway["j"]] == [
            ([1, first, "SUCCESS", 1], 0.0)
        ]
        assert midway["s"] == "2"
        # .n is caraway's own: the header group's success count, for completed_count(). The
        # join cleans up just after it sends the body, which may already have run.
        wait_until(
            lambda: (
                sorted(k.removeprefix(key) for k in results.scan_iter(match=key + ".*"))
                == [".c", ".n"]
            ),
            what="the join's keys cleaned up",
        )
        assert results.get(key + ".n") == "2"
        assert results.get(key + ".c") == "done"
        assert 0 < results.ttl(key + ".c") <= 300
    finally:
        gate.set()
        worker.stop()
        app.close()
        delete_redis_prefixed(prefix)
        results.close()


def test_a_failed_chord_keeps_every_header_result_in_its_join_key() -> None:
    """As Celery: the results stay for inspection (its test_chord_on_error reads them), even
    those that arrive after caraway failed the chord at its first failure."""
    host, port = require("redis")
    prefix = f"chordkeys-{uuid.uuid4().hex[:8]}:"
    app = Celery(
        "chordfail", broker=f"redis://{host}:{port}/0", backend=f"redis://{host}:{port}/1",
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
    )  # fmt: skip
    gate = threading.Event()
    results = redis.Redis(host=host, port=port, db=1, decode_responses=True)

    @app.task(name="keys.held")
    def held(value: int) -> int:
        assert gate.wait(WAIT)
        return value

    @app.task(name="keys.fail")
    def fail() -> None:
        raise ValueError("expected")

    @app.task(name="keys.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    worker = ThreadedWorker(app, pool="threads", concurrency=3).start()
    try:
        result = chord([held.si(3), held.si(7), fail.si()], tsum.s()).apply_async()
        gid = result.parent.id
        key = app.backend.get_key_for_group(gid, ".j")
        assert key == f"{prefix}celery-taskset-meta-{gid}.j"

        with pytest.raises(ValueError, match="expected"):
            result.get(timeout=WAIT)
        gate.set()

        wait_until(lambda: results.zcard(key) == 3, what="all three parts kept")
        parts = [app.backend.decode(member) for member in results.zrange(key, 0, -1)]  # raw
        assert [part[3] for part in parts if part[2] == "SUCCESS"] == [3, 7]
        assert [part[2] for part in parts if part[2] != "SUCCESS"] == ["FAILURE"]
        assert not results.exists(key.removesuffix(".j") + ".s")
    finally:
        gate.set()
        worker.stop()
        app.close()
        delete_redis_prefixed(prefix)
        results.close()
