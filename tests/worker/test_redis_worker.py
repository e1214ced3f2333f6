"""Real workers on a real Redis: Celery's layout on the wire, restores, leases, restarts.

Each test has its own ``global_keyprefix`` (broker db 0, results db 1, as in the captures),
and deletes its keys afterwards. The restart story runs its own ``redis-server`` on a free
port; the shared server on 6379 is never restarted.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from private_redis import PrivateRedis
from services import captures_dir, require
from worker_support import TASKS_SOURCE, WAIT, WorkerProject, autojump, wait_until

from caraway import Celery, states
from caraway.engines.registry import create_broker
from caraway.utils.time import FakeClock, parse_iso

SEP = "\x06\x16"


CAPTURE_PROPERTIES = [
    "correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
    "body_encoding", "delivery_tag",
]  # fmt: skip


def _delete_prefixed(host: str, port: int, prefix: str) -> None:
    for db in (0, 1):
        client = redis.Redis(host=host, port=port, db=db)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.ConnectionError:
            pass
        finally:
            client.close()


class RedisSpace:
    """A key prefix on one Redis server, and apps and raw clients that use it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.prefix = f"wtest-{uuid.uuid4().hex[:10]}:"
        self.apps: list[Celery] = []
        self.raw = redis.Redis(host=host, port=port, db=0)
        self.results = redis.Redis(host=host, port=port, db=1)

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"global_keyprefix": self.prefix, **extra}

    def app(self, main: str = "rtest", **transport: Any) -> Celery:
        app = Celery(
            main,
            broker=f"redis://{self.host}:{self.port}/0",
            backend=f"redis://{self.host}:{self.port}/1",
            broker_transport_options=self.options(**transport),
            result_backend_transport_options=self.options(),
        )
        self.apps.append(app)
        return app

    def key(self, name: str) -> str:
        return self.prefix + name

    def close(self) -> None:
        for app in self.apps:
            app.close()
        _delete_prefixed(self.host, self.port, self.prefix)
        self.raw.close()
        self.results.close()


@pytest.fixture
def space() -> Iterator[RedisSpace]:
    host, port = require("redis")
    space = RedisSpace(host, port)
    try:
        yield space
    finally:
        space.close()


def _captures(name: str) -> Any:
    return json.loads((captures_dir() / name).read_text())


# --- tasks run, results come back ----------------------------------------------------------


def test_tasks_run_and_results_come_back_in_celerys_keys(
    space: RedisSpace, start_worker: Callable[..., Any]
) -> None:
    app = space.app()

    @app.task(name="rtest.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rtest.fail")
    def fail() -> None:
        raise ValueError("kaboom")

    start_worker(app, pool="threads", concurrency=2)

    assert add.delay(2, 3).get(timeout=WAIT) == 5
    results = [add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=WAIT) for r in results] == [2 * i for i in range(20)]
    failed = fail.delay()
    with pytest.raises(ValueError, match="kaboom"):
        failed.get(timeout=WAIT)

    key = space.key(f"celery-task-meta-{results[0].id}")
    meta = json.loads(space.results.get(key) or b"null")
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 0)
    assert 86000 < space.results.ttl(key) <= 86400
    assert space.raw.hlen(space.key("unacked")) == 0
    assert space.raw.zcard(space.key("unacked_index")) == 0


# --- retries: the worker holds them, on its clock --------------------------------------------


def test_autoretry_with_exponential_backoff(
    space: RedisSpace, start_worker: Callable[..., Any]
) -> None:
    """``retry_backoff=True`` without jitter retries 1 s, then 2 s after a failure, and the
    worker holds each retry until its clock reaches that ETA. Redis leaves ETAs to the
    worker, so a fake clock jumping to each held retry spares the 3 real seconds."""
    app = space.app()
    clock = FakeClock(time.time())
    attempts: list[SimpleNamespace] = []

    @app.task(
        name="rtest.backoff", bind=True, autoretry_for=(ConnectionError,),
        retry_backoff=True, retry_jitter=False, max_retries=2,
    )  # fmt: skip
    def backoff(self: Any) -> int:
        eta = parse_iso(self.request.eta)
        attempts.append(
            SimpleNamespace(sent=time.time(), ran=clock.time(), eta=eta and eta.timestamp())
        )
        if self.request.retries < 2:
            raise ConnectionError("unreachable")
        return int(self.request.retries)

    worker = start_worker(app, pool="threads", concurrency=2, clock=clock)
    result = backoff.delay()

    # Between attempts the stored state is RETRY, with the exception that caused it; the
    # clock stands still, so the retry stays held.
    wait_until(lambda: app.AsyncResult(result.id).state == states.RETRY, what="RETRY")
    wait_until(worker.consumer.held_jobs, what="the first retry held")
    assert len(attempts) == 1
    with autojump(clock, worker):
        assert result.get(timeout=WAIT) == 2

    first, second, third = attempts
    assert 1 <= second.eta - first.sent < 1 + 0.5  # the countdowns the retries asked for
    assert 2 <= third.eta - second.sent < 2 + 0.5
    assert second.ran >= second.eta  # and the worker waited for them
    assert third.ran >= third.eta


# --- the wire: envelope, bindings, unacked entries ----------------------------------------


def test_the_envelope_and_bindings_match_celerys_capture(space: RedisSpace) -> None:
    app = space.app()

    @app.task(name="capapp.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)

    captured = _captures("redis_messages.json")["delay"]["keys"]
    (want,) = captured["celery"]["messages"]
    (raw,) = space.raw.lrange(space.key("celery"), 0, -1)
    got = json.loads(raw)
    assert list(got) == [k for k in want if k != "body(decoded)"]
    assert list(got["headers"]) == list(want["headers"])
    assert list(got["properties"]) == CAPTURE_PROPERTIES == list(want["properties"])
    assert json.loads(base64.b64decode(got["body"])) == want["body(decoded)"]
    assert got["body"] == want["body"]  # the same bytes for the same call
    for field in ("content-type", "content-encoding"):
        assert got[field] == want[field]
    props = got["properties"]
    assert props["delivery_info"] == want["properties"]["delivery_info"]
    assert (props["priority"], props["delivery_mode"], props["body_encoding"]) == (0, 2, "base64")
    assert props["correlation_id"] == result.id == got["headers"]["id"]
    assert uuid.UUID(props["delivery_tag"]).version == 4
    headers, want_headers = got["headers"], want["headers"]
    for name in ("lang", "task", "argsrepr", "kwargsrepr", "timelimit", "stamps", "retries"):
        assert headers[name] == want_headers[name]
    for binding in ("_kombu.binding.celery", "_kombu.binding_permanent.celery"):
        members = {m.decode() for m in space.raw.smembers(space.key(binding))}
        assert members == set(captured[binding]["value"]) == {f"celery{SEP}{SEP}celery"}


def test_a_delivered_message_waits_in_unacked_as_kombu_keeps_it(space: RedisSpace) -> None:
    app = space.app()
    app.send_task("capapp.slow", (30,))
    element = space.raw.lindex(space.key("celery"), 0)
    before = time.time()

    (delivery,) = app.broker.fetch(["celery"], 10, 1.0)

    captured = _captures("redis_unacked.json")["while_running"]
    (want_value,) = captured["unacked"]["value"].values()
    want = json.loads(want_value)
    value = space.raw.hget(space.key("unacked"), delivery.tag)
    assert value is not None
    entry = json.loads(value)
    assert len(entry) == len(want) == 3
    assert entry[1:] == want[1:] == ["", "celery"]
    assert list(entry[0]) == list(want[0])
    assert list(entry[0]["properties"]) == list(want[0]["properties"])
    assert entry[0]["properties"]["delivery_tag"] == delivery.tag
    # The hash value is the list element as it was, wrapped as kombu wraps it.
    assert value == b"[" + element + b', "", "celery"]'
    score = space.raw.zscore(space.key("unacked_index"), delivery.tag)
    assert score is not None
    assert before - 1 <= score <= time.time() + 1
    assert space.raw.llen(space.key("celery")) == 0

    app.broker.ack([delivery.tag])
    assert space.raw.hlen(space.key("unacked")) == 0
    assert space.raw.zcard(space.key("unacked_index")) == 0


def test_priorities_use_kombus_lists_and_run_lowest_first(
    space: RedisSpace, start_worker: Callable[..., Any]
) -> None:
    app = space.app()
    ran: list[int] = []

    @app.task(name="rtest.record")
    def record(priority: int) -> None:
        ran.append(priority)

    sent = [record.apply_async((p,), priority=p) for p in (9, 0, 5, 3, 6)]

    names = {k.decode() for k in space.raw.scan_iter(match=f"{space.prefix}celery*")}
    assert names == {space.key(n) for n in ("celery", f"celery{SEP}3", f"celery{SEP}6",
                                               f"celery{SEP}9")}  # fmt: skip
    start_worker(app, pool="solo")
    for result in sent:
        result.get(timeout=WAIT)
    assert ran == [0, 5, 3, 6, 9] == _captures("redis_unacked.json")["priority_execution_order"]


# --- leases: restore of the dead, renewal by the living -----------------------------------------


def test_a_live_worker_keeps_its_eta_task_past_the_visibility_timeout(
    space: RedisSpace, start_worker: Callable[..., Any]
) -> None:
    """Celery #2481 / kombu #337: an ETA longer than visibility_timeout is not duplicated."""
    app = space.app(visibility_timeout=1)
    runs: list[float] = []

    @app.task(name="rtest.stamp")
    def stamp() -> int:
        runs.append(time.time())
        return len(runs)

    start_worker(app, pool="threads", concurrency=2)
    result = stamp.apply_async(countdown=2.5)
    other = create_broker(app.conf.broker_url, app.conf.broker_transport_options)
    try:
        wait_until(lambda: space.raw.zcard(space.key("unacked_index")), what="the ETA held")
        restored = 0
        while not result.ready():  # another consumer restores what looks abandoned
            restored += other.reclaim_orphans()
            time.sleep(0.2)
    finally:
        other.close()

    assert result.get(timeout=WAIT) == 1
    assert restored == 0
    assert len(runs) == 1


def _redis_project(tmp_path: Path, space: RedisSpace, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``worker_support``'s crash-test tasks, on this Redis with a 1 s visibility timeout."""
    sqlite_app = (
        'broker=f"sqlite:///{HERE}/b.sqlite3",\n'
        '    broker_transport_options={"visibility_timeout": 2},'
    )
    redis_app = (
        'broker=os.environ["RTEST_URL"] + "/0", backend=os.environ["RTEST_URL"] + "/1",\n'
        '    broker_transport_options={"global_keyprefix": os.environ["RTEST_PREFIX"],'
        ' "visibility_timeout": 1},\n'
        '    result_backend_transport_options={"global_keyprefix": os.environ["RTEST_PREFIX"]},'
    )
    assert sqlite_app in TASKS_SOURCE
    monkeypatch.setenv("RTEST_URL", f"redis://{space.host}:{space.port}")
    monkeypatch.setenv("RTEST_PREFIX", space.prefix)
    project = WorkerProject(tmp_path)
    project.app.close()
    project.module_path.write_text(TASKS_SOURCE.replace(sqlite_app, redis_app))
    spec = importlib.util.spec_from_file_location(
        f"crashproj_tasks_{uuid.uuid4().hex}", project.module_path
    )
    assert spec is not None
    assert spec.loader is not None
    project.tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(project.tasks)
    project.app = project.tasks.app
    return project


def test_an_acks_late_task_of_a_killed_worker_is_restored_and_runs_again(
    tmp_path: Path, space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _redis_project(tmp_path, space, monkeypatch)
    try:
        first = project.spawn(pool="threads", concurrency=2)
        project.ping(timeout=20)
        result = project.tasks.late.delay("late")
        project.wait_marks("late", 1)

        first.send_signal(signal.SIGKILL)
        first.wait(WAIT)
        project.release("late")
        # Restored only once it is older than the visibility timeout (1 s) with nobody renewing.
        project.spawn(pool="solo")

        assert result.get(timeout=20) == 2
        runs = project.marks("late")
        assert [run["redelivered"] for run in runs] == [False, True]
        assert runs[0]["pid"] == first.pid != runs[1]["pid"]
        assert space.raw.hlen(space.key("unacked")) == 0
        assert space.raw.llen(space.key("celery")) == 0
    finally:
        project.close()
        project.app.close()


# --- a Redis restart under a running worker -----------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    require("redis")
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_space(private_redis: PrivateRedis) -> Iterator[RedisSpace]:
    space = RedisSpace("127.0.0.1", private_redis.port)
    try:
        yield space
    finally:
        space.close()


def test_the_worker_resumes_after_a_redis_restart(
    private_redis: PrivateRedis,
    private_space: RedisSpace,
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = private_space.app()
    lost = threading.Event()

    @app.task(name="rtest.add")
    def add(x: int, y: int) -> int:
        return x + y

    class OnLost(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Lost the connection to the broker" in record.getMessage():
                lost.set()

    handler = OnLost()
    logging.getLogger("caraway.worker").addHandler(handler)
    caplog.set_level(logging.INFO, logger="caraway.worker")
    try:
        start_worker(app, pool="threads", concurrency=2)
        assert add.delay(1, 1).get(timeout=WAIT) == 2

        private_redis.kill()
        assert lost.wait(WAIT), "the worker never noticed that Redis went away"
        private_redis.start()

        results = [add.delay(i, 1) for i in range(5)]
        assert [r.get(timeout=WAIT) for r in results] == [i + 1 for i in range(5)]
    finally:
        logging.getLogger("caraway.worker").removeHandler(handler)
    messages = [r.getMessage() for r in caplog.records if r.name == "caraway.worker"]
    assert sum("Lost the connection" in m for m in messages) == 1  # logged once, not per try
    assert any(m.startswith("Reconnected to the broker at redis://127.0.0.1:") for m in messages)


@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 2), ("asyncio", 100)])
def test_the_prefork_and_asyncio_pools_on_redis(
    tmp_path: Path, space: RedisSpace, monkeypatch: pytest.MonkeyPatch, pool: str, concurrency: int
) -> None:
    """Children (prefork) store results through their own Redis connections."""
    project = _redis_project(tmp_path, space, monkeypatch)
    try:
        worker = project.spawn(pool=pool, concurrency=concurrency)
        project.ping(timeout=20)

        naps = [project.tasks.nap.delay(0.05) for _ in range(20)]
        stamps = [project.tasks.late_stamp.delay(f"k{n}") for n in range(20)]

        spans = [r.get(timeout=WAIT) for r in naps]
        assert all(end - start >= 0.05 for _, start, end in spans)
        pids = {pid for pid, _, _ in spans}
        assert (worker.pid in pids) == (pool == "asyncio")  # prefork: only children run tasks
        assert [r.get(timeout=WAIT) for r in stamps] == [f"k{n}" for n in range(20)]
        wait_until(lambda: space.raw.hlen(space.key("unacked")) == 0, what="every ack")
        assert space.raw.llen(space.key("celery")) == 0
    finally:
        project.close()
        project.app.close()


def test_an_entry_that_is_not_an_envelope_is_set_aside_saying_what_it_is(
    space: RedisSpace, start_worker: Callable[..., Any]
) -> None:
    app = space.app()

    @app.task(name="rtest.add")
    def add(x: int, y: int) -> int:
        return x + y

    space.raw.lpush(space.key("celery"), b"hello from a script")
    start_worker(app, pool="solo")

    assert add.delay(1, 2).get(timeout=WAIT) == 3  # sent after it: the worker kept serving

    [dead] = app.broker.dead_letters()
    assert dead.reason.startswith(
        "not a Celery message: the Redis list of queue 'celery' held an entry that is not "
        "kombu's JSON envelope ("
    )
    assert "pushed it there (a script's LPUSH" in dead.reason
    assert "accept_content" not in dead.reason
    assert "x-caraway" not in dead.reason
    assert dead.message.body == b"hello from a script"
    assert space.raw.hlen(space.key("unacked")) == 0
