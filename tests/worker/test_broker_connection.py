"""A worker and an unreachable broker: Celery's ``broker_connection_*`` settings, the log
while the broker is away, and the health probes.

Redis stories run a private ``redis-server`` on a free port (started late or stopped on
purpose); RabbitMQ ones use a port nothing listens on, or a test vhost that is deleted and
made again (its connections close, and reconnecting fails until it is back).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from private_redis import PrivateRedis
from services import create_vhost, free_port, rabbitmqctl, require
from test_redis_worker import RedisSpace
from worker_support import WAIT, ThreadedWorker, wait_until

from caraway import Celery
from caraway.exceptions import OperationalError, Unreachable
from caraway.worker import remote


def probe(worker: Any, path: str) -> int:
    """The HTTP status of a health probe of ``worker`` (its --health-port is 0: any port)."""
    url = f"http://127.0.0.1:{worker.health.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


@pytest.fixture
def down_redis() -> Iterator[PrivateRedis]:
    """A private Redis on a free port, not started: the test starts it when it wants."""
    require("redis")
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.kill()


def _add_app(space: RedisSpace, **conf: Any) -> Celery:
    app = space.app()
    app.conf.update(conf)

    @app.task(name="conn.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def test_a_worker_waits_for_redis_at_start_and_is_ready_only_once_connected(
    down_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="caraway")
    space = RedisSpace("127.0.0.1", down_redis.port)
    app = _add_app(space)
    threaded = ThreadedWorker(app, pool="threads", concurrency=2, health_port=0)
    threaded.thread.start()
    try:
        worker = threaded.worker
        wait_until(lambda: worker.health is not None, what="the health probes")
        time.sleep(1.0)  # several tries fail meanwhile
        assert probe(worker, "/readyz") == 503
        assert probe(worker, "/livez") == 200  # waiting for the broker is not being stuck
        assert not worker.ready.is_set()
        assert not any(m.endswith(" ready.") for m in messages(caplog))

        down_redis.start()
        wait_until(worker.ready.is_set, what="ready once Redis is up")
        assert app.tasks["conn.add"].delay(2, 3).get(timeout=WAIT) == 5
        assert probe(worker, "/readyz") == 200
    finally:
        threaded.stop()
        space.close()
    seen = messages(caplog)
    assert sum(m.startswith("Cannot connect to the broker at redis://") for m in seen) == 1
    connected = next(i for i, m in enumerate(seen) if m.startswith("Connected to the broker"))
    ready = next(i for i, m in enumerate(seen) if m.endswith(" ready."))
    assert connected < ready


def test_a_lost_redis_is_logged_once_then_sparingly_and_readyz_follows_it(
    down_redis: PrivateRedis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="caraway")
    monkeypatch.setattr(remote, "HEARTBEAT_FREQ", 0.1)  # an event every 0.1 s: none may log
    down_redis.start()
    space = RedisSpace("127.0.0.1", down_redis.port)
    app = _add_app(space)
    add = app.tasks["conn.add"]
    threaded = ThreadedWorker(app, pool="threads", concurrency=2, health_port=0).start()
    try:
        worker = threaded.worker
        assert add.delay(1, 1).get(timeout=WAIT) == 2
        assert probe(worker, "/readyz") == 200
        caplog.clear()

        down_redis.kill()
        wait_until(lambda: probe(worker, "/readyz") == 503, what="not ready without Redis")
        time.sleep(3.0)
        during = messages(caplog, logging.WARNING)
        assert probe(worker, "/livez") == 200

        down_redis.start()
        wait_until(lambda: probe(worker, "/readyz") == 200, what="ready again")
        assert [add.delay(i, 1).get(timeout=WAIT) for i in range(3)] == [1, 2, 3]
    finally:
        threaded.stop()
        space.close()
    # Tries every 0.2, 0.4, 0.8, 1.6 s: the loss, then a line after retries 2 and 4 at most.
    assert sum(m.startswith("Lost the connection to the broker") for m in during) == 1
    assert sum(m.startswith("Could not send event") for m in during) <= 1
    assert len(during) <= 4, during
    after = messages(caplog, logging.WARNING)
    assert sum(m.startswith("Reconnected to the broker at redis://") for m in after) == 1


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        ({"broker_connection_max_retries": 2}, "gave up after 2 retries"),
        ({"broker_connection_retry": False}, "broker_connection_retry is off"),
    ],
)
def test_a_worker_gives_up_on_a_lost_broker_as_configured(
    down_redis: PrivateRedis, conf: dict[str, Any], why: str
) -> None:
    down_redis.start()
    space = RedisSpace("127.0.0.1", down_redis.port)
    app = _add_app(space, **conf)
    threaded = ThreadedWorker(app, pool="threads", concurrency=2).start()
    try:
        down_redis.kill()
        threaded.thread.join(WAIT)
        assert not threaded.thread.is_alive(), "the worker kept retrying"
    finally:
        down_redis.start()  # a fresh, empty server: closing needs no retries
        space.close()
    error = threaded.error
    assert isinstance(error, OperationalError)
    text = str(error)
    assert text.startswith(
        f"Lost the connection to the broker at redis://127.0.0.1:{down_redis.port}"
    )
    assert why in text


def test_broker_connection_retry_on_startup_off_fails_at_once_naming_the_masked_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    app = Celery(
        "conn-off", broker=f"redis://:s3cret@127.0.0.1:{port}/0",
        broker_connection_retry_on_startup=False,
    )  # fmt: skip
    worker = app.Worker(pool="solo")
    started = time.monotonic()
    with pytest.raises(OperationalError) as raised:
        worker.start()
    assert time.monotonic() - started < WAIT / 2
    text = str(raised.value)
    assert text.startswith(f"Cannot connect to the broker at redis://:**@127.0.0.1:{port}/0 (")
    assert "broker_connection_retry_on_startup is off" in text
    assert "s3cret" not in text
    assert "s3cret" not in caplog.text
    assert not worker.ready.is_set()
    app.close()


def test_an_unreachable_rabbitmq_is_retried_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require("rabbitmq")
    caplog.set_level(logging.INFO, logger="caraway")
    port = free_port()
    app = Celery(
        "conn-amqp", broker=f"amqp://guest:s3cret@127.0.0.1:{port}//",
        broker_connection_max_retries=2,
    )  # fmt: skip
    worker = app.Worker(pool="solo")
    with pytest.raises(OperationalError) as raised:
        worker.start()
    text = str(raised.value)
    assert text.startswith(f"Cannot connect to the broker at amqp://guest:**@127.0.0.1:{port}//")
    assert "gave up after 2 retries" in text
    seen = messages(caplog)
    assert sum(m.startswith("Cannot connect to the broker at amqp://") for m in seen) == 2
    assert not any(m.endswith(" ready.") for m in seen)
    assert "s3cret" not in caplog.text
    app.close()


def test_a_rabbitmq_outage_is_quiet_and_the_worker_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While RabbitMQ refuses the worker's vhost, the timer's housekeeping (revocations
    every 0.5 s) logs nothing above debug: the consumer's loss line says it all."""
    host, port = require("rabbitmq")
    caplog.set_level(logging.INFO, logger="caraway")
    vhost = create_vhost("conn")
    app = Celery("conn-rabbit", broker=f"amqp://guest:guest@{host}:{port}/{vhost}")

    ran = threading.Event()

    @app.task(name="conn.mark")
    def mark() -> None:
        ran.set()

    threaded = ThreadedWorker(app, pool="threads", concurrency=2, health_port=0)
    try:
        threaded.start()
        worker = threaded.worker
        assert probe(worker, "/readyz") == 200
        caplog.clear()
        rabbitmqctl("delete_vhost", vhost)  # closes the worker's connections
        wait_until(lambda: probe(worker, "/readyz") == 503, what="not ready without RabbitMQ")
        time.sleep(2.0)
        during = messages(caplog, logging.WARNING)
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        wait_until(lambda: probe(worker, "/readyz") == 200, timeout=2 * WAIT, what="ready again")
        mark.delay()
        assert ran.wait(WAIT)
    finally:
        threaded.stop()
        app.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("delete_vhost", vhost)
    assert not any("Timer callback" in m for m in during), during
    assert sum(m.startswith("Lost the connection to the broker") for m in during) == 1
    assert len(during) <= 4, during


def test_a_worker_waiting_for_its_broker_stops_when_asked() -> None:
    app = Celery("conn-stop", broker=f"redis://127.0.0.1:{free_port()}/0")
    threaded = ThreadedWorker(app, pool="threads", concurrency=1)
    threaded.thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        threaded.stop(timeout=WAIT)  # raises if the worker failed or did not stop
        assert time.monotonic() - started < 5.0  # a connect attempt in flight finishes first
        assert not threaded.worker.ready.is_set()
    finally:
        app.close()


def test_a_lost_revocation_queue_is_an_outage_and_declared_again() -> None:
    """RabbitMQ drops the worker's exclusive revocation queue with its vhost (or a restart):
    the next read is an outage (``Unreachable``, which the timer logs at debug), and the one
    after declares a new queue that receives revocations again."""
    host, port = require("rabbitmq")
    vhost = create_vhost("revq")
    app = Celery("revq", broker=f"amqp://guest:guest@{host}:{port}/{vhost}")
    try:
        broker = app.broker
        assert broker.revocations(0)[0] == []
        queue = broker._revocation_queue
        rabbitmqctl("delete_queue", "-p", vhost, str(queue))
        with pytest.raises(Unreachable):
            broker.revocations(0)
        assert broker.revocations(0)[0] == []
        assert broker._revocation_queue not in (None, queue)
        app.control.revoke("lost-queue-task")
        wait_until(
            lambda: ("lost-queue-task", False) in broker.revocations(0)[0],
            what="the revocation on the new queue",
        )
    finally:
        app.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("delete_vhost", vhost)
