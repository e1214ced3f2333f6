"""Real workers on RabbitMQ: results over rpc://, Celery's topology and wire, priorities,
ETA deferral and a dropped connection. One vhost for the module, deleted after."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from amqp_support import rabbit_vhost, rabbitmqctl, raw_channel, table, vhost_of
from services import captures_dir
from worker_support import WAIT, autojump, wait_until

from caraway import Celery, states
from caraway.canvas import Signature, StampingVisitor
from caraway.exceptions import TaskRevokedError
from caraway.utils.time import FakeClock
from caraway.worker import state as worker_state


@pytest.fixture(scope="module")
def rabbit() -> Iterator[str]:
    with rabbit_vhost("worker") as url:
        yield url


@pytest.fixture
def apps(rabbit: str) -> Iterator[Callable[..., Celery]]:
    """``apps(main, **conf)``: an app on the module's vhost with rpc:// results, closed after."""
    made: list[Celery] = []

    def make(main: str, **conf: Any) -> Celery:
        app = Celery(main, broker=rabbit, backend="rpc://", set_as_current=False, **conf)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def test_tasks_and_results_travel_over_amqp_and_rpc(
    apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    app = apps("amqp-results", task_track_started=True)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def fail() -> None:
        raise ValueError("boom")

    start_worker(app, pool="threads", concurrency=4)

    assert add.delay(2, 3).get(timeout=WAIT) == 5
    many = [add.delay(i, i) for i in range(50)]
    assert [r.get(timeout=WAIT) for r in many] == [2 * i for i in range(50)]
    failed = fail.delay()
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=WAIT)
    assert failed.state == states.FAILURE
    assert app.broker.size("celery") == 0


def test_the_declared_topology_is_celerys(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    app = apps("amqp-topology")

    @app.task
    def noop() -> int:
        return 1

    start_worker(app)
    noop.apply_async(queue="other")  # a queue nobody configured: created, as Celery does
    assert noop.delay().get(timeout=WAIT) == 1

    vhost = vhost_of(rabbit)
    queues = {
        row["name"]: row
        for row in table(
            vhost, "queues", "name", "durable", "auto_delete", "exclusive", "arguments"
        )
    }
    exchanges = {
        row["name"]: row
        for row in table(vhost, "exchanges", "name", "type", "durable", "auto_delete")
    }
    bindings = table(vhost, "bindings", "source_name", "destination_name", "routing_key")
    for name in ("celery", "other"):
        assert queues[name] == {
            "name": name, "durable": "true", "auto_delete": "false", "exclusive": "false",
            "arguments": "[]",
        }  # fmt: skip
        assert exchanges[name] == {
            "name": name, "type": "direct", "durable": "true", "auto_delete": "false"
        }  # fmt: skip
        assert {"source_name": name, "destination_name": name, "routing_key": name} in bindings
    assert app.broker.purge("other") == 1


def test_a_task_message_on_the_wire_is_celerys(rabbit: str, apps: Callable[..., Celery]) -> None:
    captured = json.loads((captures_dir() / "amqp.json").read_text())["messages_celery"][1]
    app = apps("amqp-wire")

    @app.task(name="capapp.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.broker.declare("celery")
    app.broker.purge("celery")
    add.apply_async(
        (1, 2), countdown=30, expires=120, priority=7,
        task_id="aaaaaaaa-0000-0000-0000-000000000001",
    )  # fmt: skip

    with raw_channel(rabbit) as channel:
        raw = channel.basic_get("celery", no_ack=True)
    assert raw is not None
    info, props = raw.delivery_info, dict(raw.properties)
    assert (info["exchange"], info["routing_key"], info["redelivered"]) == ("", "celery", False)
    expected = dict(captured["properties"])
    types = expected.pop("_types")
    assert set(props) == set(expected)
    expected["reply_to"] = app.oid  # one per app instance
    headers, expected_headers = (
        props.pop("application_headers"),
        expected.pop("application_headers"),
    )
    assert props == expected
    assert list(headers) == list(expected_headers)
    assert {k: type(v).__name__ for k, v in headers.items()} == types
    varying = {"eta", "expires", "origin"}  # times of the call, and the caller's pid@host
    assert {k: v for k, v in headers.items() if k not in varying} == {
        k: v for k, v in expected_headers.items() if k not in varying
    }
    eta, expires = (datetime.fromisoformat(headers[k]) for k in ("eta", "expires"))
    assert (expires - eta).total_seconds() == pytest.approx(90, abs=1)
    assert json.loads(raw.body) == captured["body"]


def test_higher_priorities_run_first_on_a_priority_queue(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    app = apps("amqp-prio", task_default_queue="prio", task_queue_max_priority=10)
    order: list[int] = []

    @app.task
    def record(priority: int) -> None:
        order.append(priority)

    for priority in (0, 0, 3, 0, 9, 5):
        record.apply_async((priority,), priority=priority)
    time.sleep(0.05)  # every message lands before the worker's first fetch
    start_worker(app, pool="solo", prefetch_multiplier=1)

    wait_until(lambda: len(order) == 6, what="six runs")
    assert order == [9, 5, 3, 0, 0, 0]
    [row] = [
        r for r in table(vhost_of(rabbit), "queues", "name", "arguments") if r["name"] == "prio"
    ]
    assert row["arguments"] == '[{"x-max-priority",10}]'


def test_the_whole_priority_range_runs_highest_first(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    # 255 is RabbitMQ's highest x-max-priority and the highest value of the priority octet.
    app = apps("amqp-prio255", task_default_queue="prio255", task_queue_max_priority=255)
    order: list[int] = []

    @app.task
    def record(priority: int) -> None:
        order.append(priority)

    for priority in (0, 10, 255):
        record.apply_async((priority,), priority=priority)
    start_worker(app, pool="threads", concurrency=1, prefetch_multiplier=1)

    wait_until(lambda: len(order) == 3, what="three runs")
    assert order == [255, 10, 0]


def test_a_far_eta_goes_down_the_delay_ladder_and_runs_once_after_it(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    # A tiny max_hold stands in for RabbitMQ's 30-minute consumer_timeout.
    app = apps("amqp-defer", task_default_queue="defer", broker_transport_options={"max_hold": 0.5})
    runs: list[float] = []

    @app.task
    def stamp() -> float:
        runs.append(time.time())
        return runs[-1]

    start_worker(app, pool="threads", concurrency=2)
    sent_at = time.time()
    result = stamp.apply_async(countdown=2.5)
    eta = sent_at + 2.5

    ran_at = result.get(timeout=WAIT)

    assert ran_at >= eta - 0.05
    assert ran_at - eta < 2.0
    time.sleep(0.3)
    assert len(runs) == 1
    delay_queues = {r["name"] for r in table(vhost_of(rabbit), "queues", "name")}
    assert "caraway.delay.1" in delay_queues
    assert app.broker.size("defer") == 0


def test_a_failover_list_reaches_the_broker_that_answers(
    rabbit: str, start_worker: Callable[..., Any]
) -> None:
    dead = rabbit.replace("127.0.0.1:5672", "127.0.0.1:1")
    assert dead != rabbit
    app = Celery(
        "amqp-failover", broker=[dead, rabbit], backend="rpc://", set_as_current=False,
        broker_connection_timeout=1,
    )  # fmt: skip

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    try:
        start_worker(app, pool="threads", concurrency=2)
        assert add.delay(2, 3).get(timeout=WAIT) == 5
        assert app.broker.params.describe().endswith("(one of 2 failover URLs)")
        assert ":1/" not in app.broker.params.describe()  # the live one answered
    finally:
        app.close()


def test_the_worker_reconnects_after_rabbitmq_drops_its_connection(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    app = apps("amqp-drop", task_default_queue="drop")

    @app.task
    def echo(value: int) -> int:
        return value

    start_worker(app, pool="threads", concurrency=2)
    assert echo.delay(1).get(timeout=WAIT) == 1
    vhost = vhost_of(rabbit)

    rabbitmqctl("close_all_connections", "-p", vhost, "caraway connection-drop test")

    results = [echo.delay(i) for i in range(10)]
    assert [r.get(timeout=WAIT) for r in results] == list(range(10))
    # The worker consumes again: a consumer is registered on its queue.
    [row] = [r for r in table(vhost, "queues", "name", "consumers") if r["name"] == "drop"]
    assert row["consumers"] == "1"


def test_an_acked_late_task_stays_unacked_while_it_runs(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    app = apps("amqp-late", task_default_queue="late")
    entered, release = threading.Event(), threading.Event()

    @app.task(acks_late=True)
    def slow() -> str:
        entered.set()
        assert release.wait(WAIT)
        return "done"

    start_worker(app, pool="threads", concurrency=1)
    result = slow.delay()
    assert entered.wait(WAIT)
    vhost = vhost_of(rabbit)

    def unacked() -> int:
        [row] = [
            r
            for r in table(vhost, "queues", "name", "messages_unacknowledged")
            if r["name"] == "late"
        ]
        return int(row["messages_unacknowledged"])

    assert unacked() == 1
    release.set()
    assert result.get(timeout=WAIT) == "done"
    wait_until(lambda: unacked() == 0, what="the late ack")


def test_eta_tasks_held_by_the_worker_do_not_block_the_prefetch_window(
    apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    # Window of 1: RabbitMQ's prefetch must grow by the held ETA messages (unacked while held).
    app = apps("amqp-window", task_default_queue="window")
    clock = FakeClock(time.time())

    @app.task
    def echo(value: str) -> str:
        return value

    worker = start_worker(app, pool="threads", concurrency=1, prefetch_multiplier=1, clock=clock)
    later = [echo.apply_async((f"later-{i}",), countdown=3) for i in range(3)]

    # The worker's clock stands still: the three wait for their ETA, and "now" runs past them.
    assert echo.delay("now").get(timeout=WAIT) == "now"
    assert len(worker.consumer.held_jobs()) == 3

    with autojump(clock, worker):
        assert [r.get(timeout=WAIT) for r in later] == ["later-0", "later-1", "later-2"]


def test_an_expiring_task_behind_a_full_window_is_taken_and_stored_as_revoked(
    rabbit: str, apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    # RabbitMQ drops a message whose ``expiration`` passes in the queue, and then nobody
    # stores REVOKED: get() would wait for ever. As Celery's, the worker's prefetch count
    # counts unacked messages, so a task acked as it starts makes room for the next one.
    app = apps("amqp-expiring", task_default_queue="expiring")
    entered, release = threading.Event(), threading.Event()

    @app.task
    def hold() -> str:
        entered.set()
        assert release.wait(WAIT)
        return "held"

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    def ready() -> int:
        rows = table(vhost_of(rabbit), "queues", "name", "messages_ready")
        return sum(int(r["messages_ready"]) for r in rows if r["name"] == "expiring")

    start_worker(app, pool="threads", concurrency=1, prefetch_multiplier=2)
    running = hold.delay()
    assert entered.wait(WAIT)  # started, so acked
    time.sleep(0.5)  # the consumer fetches again (every 0.2 s) with one place left
    reserved = hold.delay()
    wait_until(lambda: ready() == 0, what="the second task taken")
    expiring = add.apply_async((1, 1), expires=1)
    time.sleep(1.5)  # its expiration passes while the worker's window is full

    release.set()
    with pytest.raises(TaskRevokedError):
        expiring.get(timeout=WAIT)
    assert [running.get(timeout=WAIT), reserved.get(timeout=WAIT)] == ["held", "held"]


class _Monitor(StampingVisitor):
    def __init__(self, value: str) -> None:
        self.value = value

    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        return {"monitoring_id": self.value, "stamped_headers": ["monitoring_id"]}


def test_a_task_sent_right_after_a_revoke_by_stamp_is_not_run(
    apps: Callable[..., Celery], start_worker: Callable[..., Any]
) -> None:
    # The revoke reaches the worker on its pidbox connection, the task on the consumer's:
    # unordered, about one task in twenty started before the revoke was read (Celery's
    # t/integration test_revoked_by_headers_complex_canvas on RabbitMQ).
    app = apps("amqp-stamp-revoke")

    @app.task
    def noop() -> int:
        return 1

    start_worker(app, pool="threads", concurrency=4)
    states_seen = []
    try:
        for _ in range(100):
            value = uuid.uuid4().hex
            app.control.revoke_by_stamped_headers({"monitoring_id": [value]})
            sig = noop.si()
            sig.stamp(visitor=_Monitor(value))
            result = sig.apply_async()
            with contextlib.suppress(TaskRevokedError):
                result.get(timeout=WAIT)
            states_seen.append(result.state)
    finally:
        worker_state.revoked_stamps.clear()  # one map per process, as in Celery
    assert states_seen == [states.REVOKED] * 100
