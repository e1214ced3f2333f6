"""The pidbox and event formats against Celery's captures (docs/celery-wire.md §7), topic matching,
and the cluster ``State`` built from events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caraway import serialization, states
from caraway.control import mailbox
from caraway.engines.base.fanout import Exchange, matches
from caraway.engines.redis.broker import message_from_envelope
from caraway.events.event import EXCHANGE, make_event, read_events, routing_key
from caraway.events.state import State


def captured(captures_dir: Path, channel_prefix: str) -> list[dict[str, Any]]:
    lines = (captures_dir / "redis_pubsub.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    return [item for item in found if item.get("channel", "").startswith(channel_prefix)]


def test_a_captured_celery_ping_reads_as_a_request(captures_dir: Path) -> None:
    envelope = captured(captures_dir, "/0.celery.pidbox")[0]["envelope"]

    request = mailbox.read_request(message_from_envelope(envelope))

    assert request.method == "ping"
    assert request.arguments == {}
    assert request.destination is None
    assert request.reply_to == {"exchange": "reply.celery.pidbox",
                                "routing_key": request.reply_to["routing_key"]}  # fmt: skip
    assert request.ticket == envelope["body(decoded)"]["ticket"]
    assert request.clock == 1
    assert request.expires == envelope["headers"]["expires"]
    assert request.is_for("w1@spec")


def test_our_request_has_celerys_body_and_headers(captures_dir: Path) -> None:
    captured_body = captured(captures_dir, "/0.celery.pidbox")[0]["envelope"]["body(decoded)"]
    reply_to = {"exchange": "reply.celery.pidbox", "routing_key": "r"}
    request = mailbox.Request("ping", {}, ticket="t", clock=3, expires=12.5, reply_to=reply_to)

    message = mailbox.request_message(request)

    assert list(serialization.json_loads(message.body)) == list(captured_body)
    assert message.headers == {"clock": 3, "expires": 12.5}
    assert message.properties["delivery_mode"] == 2


def test_a_request_without_reply_has_no_ticket_like_celerys_revoke() -> None:
    request = mailbox.Request("revoke", {"task_id": "x", "terminate": True, "signal": "SIGTERM"})

    body = serialization.json_loads(mailbox.request_message(request).body)

    assert body == {"method": "revoke", "arguments": request.arguments, "destination": None,
                    "pattern": None, "matcher": None}  # fmt: skip


@pytest.mark.parametrize(
    ("destination", "pattern", "matcher", "expected"),
    [
        (["a@h"], None, None, True),
        (["b@h"], None, None, False),
        (None, "a@*", None, True),
        (None, "b@*", "glob", False),
        (None, r"^a@\w$", "pcre", True),
    ],
)
def test_who_a_request_is_for(
    destination: list[str] | None, pattern: str | None, matcher: str | None, expected: bool
) -> None:
    request = mailbox.Request("ping", {}, destination=destination, pattern=pattern,
                              matcher=matcher)  # fmt: skip
    assert request.is_for("a@h") is expected


def test_a_reply_carries_the_ticket_and_maps_the_node_to_its_answer() -> None:
    message = mailbox.reply_message("w1@spec", {"ok": "pong"}, "ticket-1", 7)

    assert mailbox.read_reply(message) == ("ticket-1", {"w1@spec": {"ok": "pong"}})
    assert message.headers == {"ticket": "ticket-1", "clock": 7}
    assert message.properties == {"delivery_mode": 1}


def test_a_non_json_request_is_refused() -> None:
    message = mailbox.request_message(mailbox.Request("ping", {}))
    message.content_type = "application/x-python-serialize"

    with pytest.raises(Exception, match="Refusing"):
        mailbox.read_request(message)


def test_captured_task_multi_events_read_as_a_list(captures_dir: Path) -> None:
    multi = captured(captures_dir, "/0.celeryev/task.multi")[0]["envelope"]

    events = read_events(message_from_envelope(multi))

    assert [event["type"] for event in events] == ["task-received"]
    assert events[0]["args"] == "(2, 3)"


def test_our_event_has_celerys_fields_in_celerys_order(captures_dir: Path) -> None:
    online = captured(captures_dir, "/0.celeryev/worker.online")[0]["envelope"]["body(decoded)"]

    ours = make_event("worker-online", "w1@spec", 1, freq=2.0, active=0, processed=0,
                      loadavg=[0.0, 0.0, 0.0], sw_ident="py-caraway", sw_ver="0.1.0",
                      sw_sys="Linux")  # fmt: skip

    assert list(ours) == list(online)
    assert routing_key("worker-online") == "worker.online"
    assert (EXCHANGE.name, EXCHANGE.kind, EXCHANGE.durable) == ("celeryev", "topic", True)


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        ("#", "task.multi", True),
        ("#", "worker", True),
        ("task.#", "task.multi", True),
        ("*.heartbeat", "worker.heartbeat", True),
        ("*.heartbeat", "worker.x.heartbeat", False),
        ("worker.*", "task.sent", False),
        ("#.sent", "task.sent", True),
    ],
)
def test_topic_matching(binding: str, key: str, expected: bool) -> None:
    assert matches(Exchange("ev", "topic"), binding, key) is expected


def test_direct_and_fanout_matching() -> None:
    assert matches(Exchange("d", "direct"), "abc", "abc")
    assert not matches(Exchange("d", "direct"), "abc", "abd")
    assert matches(Exchange("f", "fanout"), "", "anything")


def test_state_tracks_workers_by_heartbeat_and_tasks_by_their_events() -> None:
    state = State()
    state.event(make_event("worker-online", "w1@h", 1, freq=2.0, active=0, processed=0))
    uuid = "t1"
    for clock, kind, fields in [
        (2, "task-received", {"name": "proj.add", "args": "(1, 2)"}),
        (3, "task-started", {}),
        (4, "task-succeeded", {"result": "3", "runtime": 0.01}),
    ]:
        state.event(make_event(kind, "w1@h", clock, uuid=uuid, **fields))
    state.event(make_event("task-started", "w1@h", 5, uuid=uuid, timestamp=1.0))  # late

    task = state.tasks[uuid]
    assert task.state == states.SUCCESS
    assert (task.name, task.result, task.hostname) == ("proj.add", "3", "w1@h")
    assert [w.hostname for w in state.alive_workers()] == ["w1@h"]
    state.event(make_event("worker-offline", "w1@h", 6, freq=2.0))
    assert state.alive_workers() == []
    assert state.workers["w1@h"].alive is False
    assert state.tasks_by_type("proj.add") == [task]
    assert state.event_count == 6


def test_a_worker_is_offline_once_its_heartbeats_stop() -> None:
    state = State()
    state.event(make_event("worker-heartbeat", "w1@h", 1, freq=2.0))
    worker = state.workers["w1@h"]

    assert worker.is_alive(worker.heartbeats[-1] + 3.9)
    assert not worker.is_alive(worker.heartbeats[-1] + 4.1)
