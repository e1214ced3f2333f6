"""Where a message goes when ``task_queues`` binds queues to exchanges (Celery's rule), and
what engines without exchanges say. Brokers that route are tested in tests/worker and
tests/interop; these need no server."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from caraway import Caraway
from caraway.exceptions import ImproperlyConfigured
from caraway.queues import Broadcast, Exchange, Queue, worker_direct
from caraway.routing import queue_table

NEWS = Exchange("news", type="topic")


def _where(app: Caraway, **route: Any) -> tuple[str, str, str, str]:
    sent = queue_table(app.conf).destination(route)
    return sent.queue, sent.exchange, sent.routing_key, sent.exchange_type


@pytest.fixture
def routed(app: Caraway) -> Caraway:
    app.conf.task_queues = [
        Queue("sport", NEWS, routing_key="news.sport.*"),
        Queue("images", Exchange("media"), routing_key="media.image"),
        Queue("plain"),
        Broadcast("announcements"),
    ]
    return app


def test_a_direct_queue_is_reached_straight_unless_exchange_and_key_are_both_given(
    routed: Caraway,
) -> None:
    assert _where(routed, queue="images") == ("images", "", "images", "direct")
    assert _where(routed, queue="images", routing_key="x") == ("images", "", "images", "direct")
    assert _where(routed, queue="images", exchange="media", routing_key="media.image") == (
        "images", "media", "media.image", "direct",
    )  # fmt: skip


def test_a_topic_queue_is_reached_through_its_exchange_with_the_given_or_its_own_key(
    routed: Caraway,
) -> None:
    assert _where(routed, queue="sport") == ("sport", "news", "news.sport.*", "topic")
    assert _where(routed, queue="sport", routing_key="news.sport.golf") == (
        "sport", "news", "news.sport.golf", "topic",
    )  # fmt: skip


def test_an_exchange_named_by_the_route_keeps_the_type_task_queues_gives_it(
    routed: Caraway,
) -> None:
    # No queue: the default queue is declared (created), the message goes to the exchange.
    assert _where(routed, exchange="news", routing_key="news.weather") == (
        "celery", "news", "news.weather", "topic",
    )  # fmt: skip


def test_task_routes_may_name_an_exchange_and_key(routed: Caraway) -> None:
    routed.conf.task_routes = {
        "feed.*": {"exchange": "news", "exchange_type": "topic", "routing_key": "news.feed"},
    }
    table = queue_table(routed.conf)
    for name in ("sport", "everything"):
        routed.broker.declare_bound(table.declaration(Queue(name, NEWS, "news.#")))
    routed.send_task("feed.import", (1,))

    sport, everything = (routed.broker.fetch([q], 10, 0.0) for q in ("sport", "everything"))
    assert [(d.exchange, d.routing_key) for d in sport + everything] == [
        ("news", "news.feed"), ("news", "news.feed"),
    ]  # fmt: skip


def test_a_broadcast_is_found_by_its_alias_and_not_declared_by_the_sender(
    routed: Caraway,
) -> None:
    sent = queue_table(routed.conf).destination({"queue": "announcements"})
    assert sent.queue.startswith("bcast.")
    assert (sent.exchange, sent.routing_key, sent.exchange_type) == (
        "announcements", "celery", "fanout",
    )  # fmt: skip
    assert sent.declaration is None


def test_queues_without_exchange_or_key_take_celerys_defaults(app: Caraway) -> None:
    app.conf.task_default_exchange = "tasks"
    app.conf.task_default_exchange_type = "topic"
    app.conf.task_default_routing_key = "task.default"
    table = queue_table(app.conf)
    bound = table.declaration(table.get("celery"))
    assert (bound.exchange, bound.exchange_type, bound.routing_key) == (
        "tasks", "topic", "task.default",
    )  # fmt: skip
    assert _where(app) == ("celery", "tasks", "task.default", "topic")
    app.conf.task_queues = [Queue("images")]
    table = queue_table(app.conf)
    bound = table.declaration(table.get("images"))
    assert (bound.exchange, bound.routing_key) == ("tasks", "task.default")


KOMBU_SCRIPT = """
from kombu import Exchange, Queue
from kombu.common import Broadcast

from caraway import Caraway
from caraway.routing import queue_table

app = Caraway("k", broker="memory://kombu-objects", set_as_current=False)
app.conf.task_queues = [
    Queue("sport", Exchange("news", type="topic"), routing_key="news.sport.*"),
    Broadcast("announcements"),
]
table = queue_table(app.conf)
sport = table.destination({"queue": "sport"})
everyone = table.destination({"queue": "announcements"})
print(sport.exchange, sport.routing_key, sport.exchange_type, sport.declaration.durable)
print(everyone.exchange, everyone.exchange_type, everyone.declaration, everyone.queue[:6])
"""


def test_kombus_objects_are_read_as_they_are() -> None:
    # In a child: kombu imports Django when it is installed, which test_config's laziness
    # check must not find in this process.
    out = subprocess.run(
        [sys.executable, "-c", KOMBU_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "news news.sport.* topic True",
        "announcements fanout None bcast.",
    ]


def test_worker_direct_uses_celerys_names() -> None:
    queue = worker_direct("w1@host")
    assert (queue.name, queue.exchange.name, queue.exchange.type, queue.routing_key) == (
        "w1@host.dq2", "C.dq2", "direct", "w1@host",
    )  # fmt: skip


def test_an_unknown_exchange_type_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="use one of direct, topic, fanout"):
        Exchange("x", type="headers")


# --- the in-process engines keep a binding table -------------------------------------------


def _ran(app: Caraway, queue: str) -> list[tuple[str, str | None]]:
    """(exchange, routing key) of what waits in ``queue``, taken and acked."""
    found = app.broker.fetch([queue], 100, 0.0)
    app.broker.ack([d.tag for d in found])
    return sorted((d.exchange, d.routing_key) for d in found)


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_in_process_engines_route_topics_and_broadcasts_like_rabbitmq(
    engine: str, tmp_path: Any
) -> None:
    url = f"memory://x-{tmp_path.name}" if engine == "memory" else f"sqlite:///{tmp_path}/b.db"
    apps = [Caraway(f"a{n}", broker=url, set_as_current=False) for n in range(3)]
    for app in apps:  # each app stands for a process: a broadcast queue of its own
        app.conf.task_queues = [Queue("sport", NEWS, routing_key="news.sport.*"),
                                Queue("everything", NEWS, routing_key="#"),
                                Broadcast("announcements")]  # fmt: skip
    sender, one, two = apps
    for worker in (one, two):  # what a worker does at boot for the queues it consumes
        table = queue_table(worker.conf)
        for name in ("sport", "everything", "announcements"):
            worker.broker.declare_bound(table.declaration(table.get(name)))
    add = sender.task(name="proj.add")(lambda x, y: x + y)

    add.apply_async((1, 1), exchange="news", routing_key="news.sport.golf")
    add.apply_async((1, 1), exchange="news", routing_key="news.weather")
    add.apply_async((1, 1), queue="announcements")

    assert _ran(one, "sport") == [("news", "news.sport.golf")]
    assert _ran(one, "everything") == [("news", "news.sport.golf"), ("news", "news.weather")]
    for worker in (one, two):
        bcast = queue_table(worker.conf).get("announcements").name
        assert _ran(worker, bcast) == [("announcements", "celery")]
    bcast = queue_table(one.conf).get("announcements").name
    one.close()  # its broadcast queue goes with it
    add.apply_async((1, 1), queue="announcements")
    assert sender.broker.size(bcast) == 0
    assert _ran(two, queue_table(two.conf).get("announcements").name) == [
        ("announcements", "celery")
    ]
    for app in (sender, two):
        app.close()


# --- engines that route by queue name only -------------------------------------------------


def test_sending_to_an_exchange_on_a_broker_without_exchanges_names_the_fix(
    routed: Caraway,
) -> None:
    routed.broker.capabilities = replace(routed.broker.capabilities, exchanges=False)
    add = routed.task(name="proj.add")(lambda x, y: x + y)
    with pytest.raises(ImproperlyConfigured, match=r"'news'.*route this task by queue name"):
        add.apply_async((1, 2), queue="sport")
    add.apply_async((1, 2), queue="images")  # a direct queue is reached by its name
    assert routed.broker.size("images") == 1


def test_the_queues_own_direct_exchange_is_routing_by_name_on_any_broker(
    routed: Caraway,
) -> None:
    """A retry names the exchange its message came through (``delivery_info``); for a plain
    queue that is the queue's own direct exchange, which a broker without exchanges can serve."""
    routed.broker.capabilities = replace(routed.broker.capabilities, exchanges=False)
    add = routed.task(name="proj.add")(lambda x, y: x + y)

    add.apply_async((1, 2), queue="plain", exchange="plain", routing_key="plain")

    assert routed.broker.size("plain") == 1
