"""The Redis lane's pipelined writes (acks, publishes): replies are read later, errors surface."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import services

from caraway import Celery
from caraway.brokers.base import Outgoing
from caraway.brokers.redis import RedisBroker
from caraway.clients.redis import MAX_UNREAD, Lane
from caraway.exceptions import OperationalError, PublishRefused
from caraway.protocol import build_task_message


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    host, port = services.require("redis")
    client = redis.Redis(host=host, port=port, db=0)
    yield client
    client.close()


@pytest.fixture
def lane(client: redis.Redis) -> Iterator[Lane]:
    lane = Lane(client)
    yield lane
    lane.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"lane-{uuid.uuid4().hex}"
    yield name
    client.delete(name, name + ":list")


def test_sent_commands_are_applied_and_their_replies_read_before_the_next_call(
    client: redis.Redis, key: str, lane: Lane
) -> None:
    for i in range(MAX_UNREAD + 10):  # past the bound, so some replies are read early
        lane.send(("RPUSH", key + ":list", str(i)))
    assert lane.call(("LLEN", key + ":list")) == [MAX_UNREAD + 10]
    assert lane.call(("PING",)) == [b"PONG"]  # in step: nothing left owed


def test_an_error_reply_to_a_sent_command_is_logged_and_the_lane_stays_in_step(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture, lane: Lane
) -> None:
    client.set(key, "a string")
    lane.send(("LPUSH", key, "x"))
    with caplog.at_level(logging.ERROR, logger="caraway.redis"):
        assert lane.call(("GET", key)) == [b"a string"]
    assert "Redis refused a pipelined command: WRONGTYPE" in caplog.text


def test_a_dropped_connection_with_replies_owed_is_reported_and_the_lane_reconnects(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture, lane: Lane
) -> None:
    (connection_id,) = lane.call(("CLIENT", "ID"))
    client.client_kill_filter(_id=connection_id)
    with caplog.at_level(logging.WARNING, logger="caraway.redis"):
        lane.send(("RPUSH", key + ":list", "lost?"))
        assert lane.call(("PING",)) == [b"PONG"]
    (new_id,) = lane.call(("CLIENT", "ID"))
    assert new_id != connection_id
    # Either the write reached the dead socket (and the loss is reported), or the
    # write saw the reset and was sent again on a new connection.
    reported = "dropped before 1 pipelined acks were confirmed" in caplog.text
    assert reported or client.lrange(key + ":list", 0, -1) == [b"lost?"]


def test_publishes_return_before_redis_confirms_and_flush_waits_for_the_confirmations(
    client: redis.Redis, key: str, lane: Lane
) -> None:
    for i in range(MAX_UNREAD + 10):
        lane.publish([("RPUSH", key + ":list", str(i))], f"message {i}")
    lane.flush()
    assert client.lrange(key + ":list", 0, -1) == [str(i).encode() for i in range(266)]
    assert lane.call(("PING",)) == [b"PONG"]


def test_a_refused_publish_is_raised_by_flush_naming_what_was_not_queued(
    client: redis.Redis, key: str, lane: Lane
) -> None:
    client.set(key, "a string")
    lane.publish([("LPUSH", key, "x")], "task add[1234]")
    with pytest.raises(OperationalError, match=r"refused 1 .*task add\[1234\] \(WRONGTYPE"):
        lane.flush()
    lane.flush()  # reported once


def test_a_refusal_read_by_another_call_stops_the_next_publish(
    client: redis.Redis, key: str, lane: Lane
) -> None:
    client.set(key, "a string")
    lane.publish([("LPUSH", key, "x")], "task add[1234]")
    assert lane.call(("PING",)) == [b"PONG"]  # reads the refusal, and is not failed by it
    with pytest.raises(OperationalError, match=r"task add\[1234\]"):
        lane.publish([("RPUSH", key + ":list", "next")], "task add[5678]")
    assert client.llen(key + ":list") == 0  # the raising publish sent nothing
    lane.publish([("RPUSH", key + ":list", "next")], "task add[5678]")
    lane.flush()
    assert client.lrange(key + ":list", 0, -1) == [b"next"]


def test_publishes_lost_with_the_connection_are_written_again(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    lane = Lane(client)
    try:
        (connection_id,) = lane.call(("CLIENT", "ID"))
        # Writes wait while Redis is paused, so the connection dies with the publish unrun.
        client.client_pause(300, all=False)
        lane.publish([("RPUSH", key + ":list", "kept")], "task add[1234]")
        wait_until_blocked(client, connection_id)
        client.client_kill_filter(_id=connection_id)
        with caplog.at_level(logging.WARNING, logger="caraway.redis"):
            lane.flush()
        assert "dropped before 1 publishes were confirmed" in caplog.text
        assert client.lrange(key + ":list", 0, -1) == [b"kept"]
    finally:
        client.client_unpause()
        lane.close()


def test_close_reads_what_exited_threads_owe_and_logs_their_refusals(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    client.set(key, "a string")
    lane = Lane(client)
    publisher = threading.Thread(target=lambda: lane.publish([("LPUSH", key, "x")], "task t[1]"))
    publisher.start()
    publisher.join()
    with caplog.at_level(logging.ERROR, logger="caraway.redis"):
        lane.close()
    assert "Redis refused a publish, so it was not queued: task t[1] (WRONGTYPE" in caplog.text


def wait_until_blocked(client: redis.Redis, connection_id: int) -> None:
    """Until Redis holds the paused connection's command (so killing it drops it unrun)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        held = next(c for c in client.client_list() if c["id"] == str(connection_id))
        if "b" in held["flags"]:
            return
        time.sleep(0.005)
    raise AssertionError("the paused publish never reached Redis")


def test_the_broker_names_the_task_whose_publish_redis_refused(client: redis.Redis) -> None:
    host, port = services.require("redis")
    prefix = f"lane-{uuid.uuid4().hex[:8]}:"
    broker = RedisBroker(f"redis://{host}:{port}/0", {"global_keyprefix": prefix})
    client.set(prefix + "orders", "not a list")
    message = build_task_message("shop.ship", "id-42", (), {})
    try:
        broker.publish([Outgoing(message, "orders")])
        with pytest.raises(
            OperationalError, match=r"1 message\(s\) to 'orders': shop.ship\[id-42\]"
        ):
            broker.flush()
    finally:
        broker.close()
        client.delete(*client.keys(prefix + "*"))


def test_flush_leaves_owed_acks_for_the_next_command(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture, lane: Lane
) -> None:
    client.set(key, "a string")
    with caplog.at_level(logging.ERROR, logger="caraway.redis"):
        lane.send(("LPUSH", key, "x"))
        lane.flush()  # no publish owed: no wait for the ack's reply
        assert "WRONGTYPE" not in caplog.text
        lane.call(("PING",))
    assert "Redis refused a pipelined command: WRONGTYPE" in caplog.text


def test_past_the_retained_bytes_bound_replies_are_read_before_the_next_publish(
    client: redis.Redis, key: str, monkeypatch: pytest.MonkeyPatch, lane: Lane
) -> None:
    monkeypatch.setattr("caraway.clients.redis.MAX_RETAINED", 1)
    client.set(key, "a string")
    lane.publish([("LPUSH", key, "x")], "task add[1]")
    with pytest.raises(OperationalError, match=r"task add\[1\]"):
        lane.publish([("RPUSH", key + ":list", "y")], "task add[2]")


def test_a_refusal_reaches_the_caller_of_the_next_send_through_its_retries(
    client: redis.Redis, lane: Lane
) -> None:
    host, port = services.require("redis")
    prefix = f"lane-{uuid.uuid4().hex[:8]}:"
    app = Celery(
        "refusals", broker=f"redis://{host}:{port}/0", set_as_current=False,
        broker_transport_options={"global_keyprefix": prefix}, task_publish_retry=True,
    )  # fmt: skip
    client.set(prefix + "blocked", "not a list")
    try:
        refused = app.send_task("shop.ship", queue="blocked")
        app.broker._lane.call(("PING",))  # reads the refusal, as a worker's next fetch would
        with pytest.raises(PublishRefused, match=rf"shop.ship\[{refused.id}\].*WRONGTYPE"):
            app.send_task("shop.bill", queue="open")
        assert client.llen(prefix + "open") == 0  # the raising send queued nothing
        app.send_task("shop.bill", queue="open")
        app.broker.flush()
        assert client.llen(prefix + "open") == 1
    finally:
        app.close()
        client.delete(*client.keys(prefix + "*"))
