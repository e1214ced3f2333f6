"""Exchanges of ``task_queues`` on RabbitMQ: a topic route reaches every matching queue, a
``Broadcast`` task runs on every worker, ``worker_direct`` reaches one named worker. Two
workers share the module's vhost; each has its own app, as separate processes would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from amqp_support import rabbit_vhost, table, vhost_of
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


def make_app(url: str, main: str) -> Celery:
    app = Celery(main, broker=url, task_queues=task_queues(), worker_direct=True,
                 set_as_current=False)  # fmt: skip

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
def workers(rabbit: str) -> Iterator[Celery]:
    """Worker ``sport@test`` consumes sport, ``all@test`` everything; both the broadcast
    queue and their worker-direct queue. Yields the sending app."""
    apps = [make_app(rabbit, name) for name in ("sport", "all", "sender")]
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


def test_worker_direct_reaches_only_the_named_worker(workers: Celery, rabbit: str) -> None:
    send(workers, "to-sport", queue="sport@test.dq2")
    send(workers, "to-all", exchange="C.dq2", routing_key="all@test")
    assert ran("to-sport", 1) == [("sport@test", "", "sport@test.dq2")]
    assert ran("to-all", 1) == [("all@test", "C.dq2", "all@test")]
    bindings = table(vhost_of(rabbit), "bindings", "source_name", "destination_name",
                     "routing_key")  # fmt: skip
    assert {"source_name": "C.dq2", "destination_name": "sport@test.dq2",
            "routing_key": "sport@test"} in bindings  # fmt: skip
    exchanges = table(vhost_of(rabbit), "exchanges", "name", "type")
    assert {"name": "news", "type": "topic"} in exchanges
    assert {"name": "announcements", "type": "fanout"} in exchanges
