"""The Redis lane's pipelined sends (acks): replies are read later, errors still surface."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import services

from caraway.engines.redis.client import MAX_UNREAD, Lane


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    host, port = services.require("redis")
    client = redis.Redis(host=host, port=port, db=0)
    yield client
    client.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"lane-{uuid.uuid4().hex}"
    yield name
    client.delete(name, name + ":list")


def test_sent_commands_are_applied_and_their_replies_read_before_the_next_call(
    client: redis.Redis, key: str
) -> None:
    lane = Lane(client)
    try:
        for i in range(MAX_UNREAD + 10):  # past the bound, so some replies are read early
            lane.send(("RPUSH", key + ":list", str(i)))
        assert lane.call(("LLEN", key + ":list")) == [MAX_UNREAD + 10]
        assert lane.call(("PING",)) == [b"PONG"]  # in step: nothing left owed
    finally:
        lane.close()


def test_an_error_reply_to_a_sent_command_is_logged_and_the_lane_stays_in_step(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    client.set(key, "a string")
    lane = Lane(client)
    try:
        lane.send(("LPUSH", key, "x"))
        with caplog.at_level(logging.ERROR, logger="caraway.redis"):
            assert lane.call(("GET", key)) == [b"a string"]
        assert "Redis refused a pipelined command: WRONGTYPE" in caplog.text
    finally:
        lane.close()


def test_a_dropped_connection_with_replies_owed_is_reported_and_the_lane_reconnects(
    client: redis.Redis, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    lane = Lane(client)
    try:
        (connection_id,) = lane.call(("CLIENT", "ID"))
        client.client_kill_filter(_id=connection_id)
        with caplog.at_level(logging.WARNING, logger="caraway.redis"):
            lane.send(("RPUSH", key + ":list", "lost?"))
            assert lane.call(("PING",)) == [b"PONG"]
        (new_id,) = lane.call(("CLIENT", "ID"))
        assert new_id != connection_id
        # Either the write reached the dead socket (and the loss is reported), or the
        # write saw the reset and was sent again on a new connection.
        reported = "dropped before 1 pipelined commands were confirmed" in caplog.text
        assert reported or client.lrange(key + ":list", 0, -1) == [b"lost?"]
    finally:
        lane.close()


def test_commands_whose_replies_a_dropped_connection_took_go_to_on_lost(
    client: redis.Redis, key: str
) -> None:
    lost: list[Any] = []
    lane = Lane(client, on_lost=lost.extend)
    first, second = ("RPUSH", key + ":list", "a"), ("RPUSH", key + ":list", "b")
    try:
        (connection_id,) = lane.call(("CLIENT", "ID"))
        lane.send(first)  # applied; its reply waits, unread, in our socket
        client.client_kill_filter(_id=connection_id)
        lane.send(second)
        assert lane.call(("PING",)) == [b"PONG"]
    finally:
        lane.close()
    # Either the second write reached the dead socket (it is lost: handed over), or it saw
    # the reset: the first, owed a reply, is handed over and the second sent again.
    applied = client.lrange(key + ":list", 0, -1)
    assert (lost, applied) in (([second], [b"a"]), ([first], [b"a", b"b"]))
