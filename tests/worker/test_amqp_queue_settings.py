"""``control_queue_expires/ttl`` and ``event_queue_expires/ttl`` become the ``x-expires`` and
``x-message-ttl`` arguments of the pidbox, reply and monitor queues on RabbitMQ, as in Celery;
``event_queue_prefix`` names the monitor's queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqp_support import rabbit_vhost, raw_channel, table, vhost_of
from worker_support import WAIT, wait_until

from caraway import Celery
from caraway.events import EventReceiver
from caraway.exceptions import ImproperlyConfigured


@pytest.fixture(scope="module")
def rabbit() -> Iterator[str]:
    with rabbit_vhost("queue-settings") as url:
        yield url


def arguments(url: str) -> dict[str, str]:
    rows = table(vhost_of(url), "queues", "name", "arguments")
    return {row["name"]: row["arguments"] for row in rows}


def test_control_and_event_queues_carry_the_configured_lifetimes(
    rabbit: str, start_worker: Callable[..., Any]
) -> None:
    app = Celery(
        "queue-settings", broker=rabbit, set_as_current=False,
        control_queue_expires=20, control_queue_ttl=30.5,
        event_queue_expires=70, event_queue_ttl=7, event_queue_prefix="monitorq",
    )  # fmt: skip
    start_worker(app, hostname="lifetimes@test")
    replied = threading.Event()
    seen: dict[str, str] = {}

    def look_while_waiting(reply: Any) -> None:  # the reply queue exists only now
        seen.update(arguments(rabbit))
        replied.set()

    with EventReceiver(app) as receiver:
        receiver.subscribe()
        app.control.ping(timeout=WAIT, limit=1, callback=look_while_waiting)
        wait_until(replied.is_set, WAIT, "the ping reply")

    [pidbox] = [args for name, args in seen.items() if name == "lifetimes@test.celery.pidbox"]
    [reply] = [args for name, args in seen.items() if name.endswith(".reply.celery.pidbox")]
    [monitor] = [args for name, args in seen.items() if name.startswith("monitorq.")]
    for queue in (pidbox, reply):
        assert '{"x-expires",20000}' in queue
        assert '{"x-message-ttl",30500}' in queue
    assert '{"x-expires",70000}' in monitor
    assert '{"x-message-ttl",7000}' in monitor
    app.close()


def test_task_default_delivery_mode_and_the_call_option_reach_rabbitmq(rabbit: str) -> None:
    app = Celery(
        "delivery-mode", broker=rabbit, set_as_current=False,
        task_default_delivery_mode="transient",
    )  # fmt: skip

    @app.task(name="modes.noop")
    def noop() -> None: ...

    app.broker.declare("modes")
    noop.apply_async(queue="modes")
    noop.apply_async(queue="modes", delivery_mode="persistent")

    with raw_channel(rabbit) as channel:
        modes = [channel.basic_get("modes", no_ack=True).properties["delivery_mode"] for _ in "ab"]
    assert modes == [1, 2]
    app.close()


def test_an_unknown_delivery_mode_is_refused_naming_the_choices() -> None:
    app = Celery("bad-mode", broker="memory://bad-mode", set_as_current=False)

    @app.task(name="modes.noop")
    def noop() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="'persistent' \\(2\\) or 'transient' \\(1\\)"):
        noop.apply_async(delivery_mode="durable")
