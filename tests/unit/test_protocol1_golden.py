"""``task_protocol = 1`` against the golden vector: a real Celery 5.7 protocol-1 send, captured
on Redis (``redis_misc.json``, ``protocol1_message``; docs/celery-wire.md §1.7).

The body must hold Celery's keys in Celery's order with the same values, the id aside; the
headers are empty and the properties are v2's.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, chain
from caraway.engines.base.broker import Outgoing
from caraway.protocol import build_task_message_v1, parse_task_message

JSON = frozenset({"application/json"})
ENVELOPE_ONLY_PROPERTIES = {"body_encoding", "delivery_tag"}


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway(
        "capapp",
        broker=f"memory://protocol1-{uuid.uuid4().hex}",
        task_protocol=1,
        set_as_current=False,
    )

    @app.task(name="capapp.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def _captured(captures_dir: Path) -> dict[str, Any]:
    capture: dict[str, Any] = json.loads((captures_dir / "redis_misc.json").read_text())
    return capture["protocol1_message"]


def test_v1_message_matches_the_celery_capture(
    captures_dir: Path, app: Caraway, published: list[Outgoing]
) -> None:
    envelope = _captured(captures_dir)
    theirs = json.loads(base64.b64decode(envelope["body"]))

    app.tasks["capapp.add"].delay(1, 2)

    (sent,) = published
    ours = sent.message
    assert ours.headers == envelope["headers"] == {}
    assert (ours.content_type, ours.content_encoding) == (
        envelope["content-type"],
        envelope["content-encoding"],
    )
    body = json.loads(ours.body)
    assert list(body) == list(theirs), "Celery's keys in Celery's order"
    assert {**body, "id": None} == {**theirs, "id": None}
    assert body["id"] == ours.properties["correlation_id"]
    captured_properties = set(envelope["properties"]) - ENVELOPE_ONLY_PROPERTIES
    assert set(ours.properties) == captured_properties
    for key in ("delivery_mode", "delivery_info", "priority"):
        assert ours.properties[key] == envelope["properties"][key], key
    # Same id in the capture: the bytes are Celery's, exactly.
    again = build_task_message_v1("capapp.add", theirs["id"], (1, 2))[0]
    assert again.body == base64.b64decode(envelope["body"])


def test_countdown_expires_and_group_ride_in_the_body(app: Caraway) -> None:
    before = datetime.now(timezone.utc)
    message, body = build_task_message_v1(
        "capapp.add", "some-id", (1, 2), eta=before + timedelta(seconds=30),
        expires=before + timedelta(seconds=120), group="gid", group_index=3, retries=2,
        time_limit=10, soft_time_limit=5, now=before,
    )  # fmt: skip

    assert (body["group"], body["taskset"], body["group_index"]) == ("gid", "gid", 3)
    assert message.properties["expiration"] == "120000"
    call = parse_task_message(message, JSON)
    assert call.eta == before + timedelta(seconds=30)
    assert call.expires == before + timedelta(seconds=120)
    assert (call.group, call.group_index, call.retries) == ("gid", 3, 2)
    assert call.timelimit == (10, 5)


def test_a_chain_is_sent_as_links_and_reads_back_as_callbacks(
    app: Caraway, published: list[Outgoing]
) -> None:
    add = app.tasks["capapp.add"]
    chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()

    (sent,) = published
    call = parse_task_message(sent.message, JSON)
    assert call.embed["chain"] is None  # protocol 1 has no chain field
    (second,) = call.embed["callbacks"]
    assert (second["task"], second["args"]) == ("capapp.add", [3])
    (third,) = second["options"]["link"]
    assert (third["task"], third["args"]) == ("capapp.add", [4])
    assert "link" not in third["options"]
