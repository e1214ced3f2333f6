"""Three beat processes on Redis: one sends each run exactly once, and killing it mid-run
(SIGKILL) neither skips nor doubles a run: the successor resumes from the recorded state."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from beat_support import BeatProject, wait_until
from services import require

from caraway.engines.base.beat_store import EntryState
from caraway.engines.base.broker import Outgoing
from caraway.engines.base.topology import QueueDeclaration
from caraway.engines.redis.beat_store import RedisStore
from caraway.engines.redis.client import parse_url
from caraway.engines.registry import create_broker
from caraway.protocol import build_task_message

APP = """
from caraway import Celery

url = "redis://{host}:{port}/0"
options = {{"global_keyprefix": "{prefix}"}}
app = Celery("beat_app", broker=url, backend=url, broker_transport_options=options,
             result_backend_transport_options=options)
app.conf.beat_lease_timeout = 0.6
app.conf.beat_schedule = {{"tick": {{"task": "beat_app.tick", "schedule": {every}}}}}


@app.task
def tick():
    return "tock"
"""
#: Takeover takes at most the lease (0.6 s) plus a standby's poll (0.15 s): well inside one
#: interval, so a kill at any moment leaves the next run on time or just late, never merged.
EVERY = 1.5


@pytest.fixture
def space() -> Iterator[tuple[redis.Redis, str, str, int]]:
    host, port = require("redis")
    prefix = f"btest-{uuid.uuid4().hex[:10]}:"
    client = redis.Redis(host=host, port=port, db=0)
    yield client, prefix, host, port
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_three_beats_send_each_run_once_and_survive_the_senders_death(
    beat_project: Callable[[str], BeatProject], space: tuple[redis.Redis, str, str, int]
) -> None:
    client, prefix, host, port = space
    project = beat_project(APP.format(host=host, port=port, prefix=prefix, every=EVERY))
    beats = [project.spawn("beat", "-S", "database", "-l", "INFO") for _ in range(3)]

    def state() -> dict[str, Any] | None:
        raw = client.hget(f"{prefix}_caraway.beat.state", "tick")
        return None if raw is None else json.loads(raw)

    first = wait_until(state, "the first recorded state")
    wait_until(lambda: (state() or {}).get("total_run_count", 0) >= 2, "two runs")
    owner = client.get(f"{prefix}_caraway.beat.lease")
    assert owner is not None
    sender_pid = int(owner.decode().split(":")[1])
    (sender,) = [b for b in beats if b.pid == sender_pid]
    senders = [i for i in range(3) if "Sending due task" in project.log(i)]
    assert senders == [beats.index(sender)]  # only the lease holder has sent

    os.kill(sender_pid, signal.SIGKILL)
    killed_at = (state() or {})["total_run_count"]
    last = wait_until(
        lambda: (s := state()) is not None and s["total_run_count"] >= killed_at + 3 and s,
        "three more runs after the kill",
    )

    messages = client.lrange(f"{prefix}celery", 0, -1)
    ids = [json.loads(m)["headers"]["id"] for m in messages]
    assert len(ids) == len(set(ids)) == last["total_run_count"]  # none twice, none unrecorded
    runs = (last["last_run_at"] - first["last_run_at"]) / EVERY
    assert runs == pytest.approx(last["total_run_count"] - first["total_run_count"])  # none skipped
    new_owner = client.get(f"{prefix}_caraway.beat.lease")
    assert new_owner is not None
    assert int(new_owner.decode().split(":")[1]) in {b.pid for b in beats if b is not sender}


def test_a_run_routed_through_an_exchange_reaches_the_bound_queues(
    space: tuple[redis.Redis, str, str, int],
) -> None:
    """The atomic send writes lists it knows; through an exchange the broker routes first."""
    client, prefix, host, port = space
    url = f"redis://{host}:{port}/0"
    broker = create_broker(url, {"global_keyprefix": prefix})
    store = RedisStore(client, parse_url(url), prefix)
    broker.declare_bound(QueueDeclaration("sport", "news", "topic", "news.#"))
    message = build_task_message("beat_app.tick", str(uuid.uuid4()), (), {})
    message.properties["delivery_info"] = {"exchange": "news", "routing_key": "news.tick"}
    batch = [Outgoing(message, "celery", exchange="news", routing_key="news.tick",
                      exchange_type="topic")]  # fmt: skip
    assert store.acquire("me", 5.0)

    assert store.send("me", "tick", EntryState(1.0, 1), batch, broker)

    (delivery,) = broker.fetch(["sport"], 10, 1.0)
    assert (delivery.message.task_id, delivery.routing_key) == (message.task_id, "news.tick")
    assert store.states()["tick"].total_run_count == 1
    broker.close()
