"""Exchanges of ``task_queues`` on every broker: a topic route reaches every matching queue,
a ``Broadcast`` task runs on every worker, ``worker_direct`` reaches one named worker. Two
workers per broker share the module's vhost (RabbitMQ), key prefix (Redis), file (SQLite),
schema (PostgreSQL) or store (memory); each has its own app, as separate processes would."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg
import pytest
import redis
from amqp_support import rabbit_vhost, table, vhost_of
from postgresql_support import postgresql_schema
from services import require
from worker_support import ThreadedWorker, wait_until

from caraway import Celery
from caraway.queues import Broadcast, Exchange, Queue

NEWS = Exchange("news", type="topic")
#: (hostname, argument, exchange, routing key) of every run, in both workers.
runs: list[tuple[str, str, str, str]] = []
runs_lock = threading.Lock()


def task_queues() -> list[Any]:
    """A fresh list per app: each worker gets a broadcast queue of its own."""
    return [
        Queue("sport", NEWS, routing_key="news.sport.*"),
        Queue("everything", NEWS, routing_key="#"),
        Broadcast("announcements"),
    ]


def make_app(url: str, main: str, transport: dict[str, Any]) -> Celery:
    app = Celery(main, broker=url, task_queues=task_queues(), worker_direct=True,
                 broker_transport_options=transport, set_as_current=False)  # fmt: skip

    @app.task(name="exchanges.record", bind=True)
    def record(self: Any, argument: str) -> None:
        info = self.request.delivery_info
        with runs_lock:
            runs.append((self.request.hostname, argument, info["exchange"], info["routing_key"]))

    return app


@pytest.fixture(scope="module")
def rabbit() -> Iterator[str]:
    with rabbit_vhost("exchanges") as url:
        yield url


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(URL, global_keyprefix) on the shared server; the prefix's keys are deleted after."""
    host, port = require("redis")
    prefix = f"xtest-{uuid.uuid4().hex[:10]}:"
    yield f"redis://{host}:{port}/0", prefix
    client = redis.Redis(host=host, port=port, db=0)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[tuple[str, str]]:
    with postgresql_schema("xtest") as found:
        yield found


@pytest.fixture(scope="module", params=["amqp", "redis", "sqlite", "memory", "postgresql"])
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any]]:
    if request.param == "amqp":
        return request.getfixturevalue("rabbit"), {}
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('exchanges')}/broker.sqlite3", {}
    if request.param == "memory":
        return f"memory://exchanges-{uuid.uuid4().hex}", {}
    if request.param == "postgresql":
        url, schema = request.getfixturevalue("pg_schema")
        return url, {"schema": schema}
    url, prefix = request.getfixturevalue("redis_prefix")
    return url, {"global_keyprefix": prefix}


def _binding_rows(url: str, transport: dict[str, Any]) -> set[tuple[Any, ...]]:
    """The binding table of the SQLite file or the PostgreSQL schema."""
    query = "SELECT exchange, queue, routing_key, exchange_type, owner IS NOT NULL FROM {}"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return set(conn.execute(query.format("caraway_bindings")))
    with psycopg.connect(url, autocommit=True) as conn:
        table = f'"{transport["schema"]}".caraway_bindings'
        return {(*row[:4], int(row[4])) for row in conn.execute(query.format(table))}


@pytest.fixture(scope="module")
def workers(broker: tuple[str, dict[str, Any]]) -> Iterator[Celery]:
    """Worker ``sport@test`` consumes sport, ``all@test`` everything; both the broadcast
    queue and their worker-direct queue. Yields the sending app."""
    url, transport = broker
    with runs_lock:
        runs.clear()
    apps = [make_app(url, name, transport) for name in ("sport", "all", "sender")]
    started = [
        ThreadedWorker(apps[0], hostname="sport@test", queues="sport,announcements").start(),
        ThreadedWorker(apps[1], hostname="all@test", queues="everything,announcements").start(),
    ]
    yield apps[2]
    for threaded in started:
        threaded.stop()
    for app in apps:
        app.close()


def ran(argument: str, count: int) -> list[tuple[str, str, str]]:
    def found() -> list[tuple[str, str, str]] | None:
        with runs_lock:
            seen = sorted((h, e, k) for h, a, e, k in runs if a == argument)
        return seen if len(seen) >= count else None

    return wait_until(found, what=f"{count} run(s) of {argument!r}")


def send(app: Celery, argument: str, **options: Any) -> None:
    app.send_task("exchanges.record", args=[argument], **options)


def test_a_topic_route_reaches_every_queue_whose_pattern_matches(workers: Celery) -> None:
    send(workers, "both", exchange="news", routing_key="news.sport.tennis")
    send(workers, "one", exchange="news", routing_key="news.weather")
    assert ran("both", 2) == [
        ("all@test", "news", "news.sport.tennis"),
        ("sport@test", "news", "news.sport.tennis"),
    ]
    assert ran("one", 1) == [("all@test", "news", "news.weather")]


def test_a_queue_of_a_topic_exchange_is_reached_through_the_exchange(workers: Celery) -> None:
    send(workers, "by-queue", queue="sport", routing_key="news.sport.golf")
    assert ran("by-queue", 2) == [
        ("all@test", "news", "news.sport.golf"),
        ("sport@test", "news", "news.sport.golf"),
    ]


def test_a_broadcast_task_runs_once_on_every_worker(workers: Celery) -> None:
    send(workers, "everyone", queue="announcements")
    assert ran("everyone", 2) == [
        ("all@test", "announcements", "celery"),
        ("sport@test", "announcements", "celery"),
    ]


def test_worker_direct_reaches_only_the_named_worker(workers: Celery) -> None:
    send(workers, "to-sport", queue="sport@test.dq2")
    send(workers, "to-all", exchange="C.dq2", routing_key="all@test")
    assert ran("to-sport", 1) == [("sport@test", "", "sport@test.dq2")]
    assert ran("to-all", 1) == [("all@test", "C.dq2", "all@test")]


def test_the_broker_holds_celerys_exchanges_and_bindings(
    workers: Celery, broker: tuple[str, dict[str, Any]]
) -> None:
    url, transport = broker
    if url.startswith("amqp"):
        bindings = table(vhost_of(url), "bindings", "source_name", "destination_name",
                         "routing_key")  # fmt: skip
        assert {"source_name": "C.dq2", "destination_name": "sport@test.dq2",
                "routing_key": "sport@test"} in bindings  # fmt: skip
        exchanges = table(vhost_of(url), "exchanges", "name", "type")
        assert {"name": "news", "type": "topic"} in exchanges
        assert {"name": "announcements", "type": "fanout"} in exchanges
        return
    if url.startswith("memory"):
        pytest.skip("the memory engine's binding table is not visible outside the process")
    if url.startswith(("sqlite", "postgresql")):
        rows = _binding_rows(url, transport)
        assert ("news", "sport", "news.sport.*", "topic", 0) in rows
        assert ("C.dq2", "sport@test.dq2", "sport@test", "direct", 0) in rows
        assert sum(1 for row in rows if row[0] == "announcements" and row[4]) == 2
        return
    # kombu's binding tables: "routing_key SEP pattern SEP queue", a regex for topics.
    client = redis.Redis.from_url(url)
    prefix = transport["global_keyprefix"]
    news = {m.decode() for m in client.smembers(f"{prefix}_kombu.binding.news")}
    direct = {m.decode() for m in client.smembers(f"{prefix}_kombu.binding.C.dq2")}
    client.close()
    assert "news.sport.*\x06\x16^news\\.sport\\.[^\\.]+$\x06\x16sport" in news
    assert "#\x06\x16^.*?$\x06\x16everything" in news
    assert "sport@test\x06\x16\x06\x16sport@test.dq2" in direct
