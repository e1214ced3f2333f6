"""What caraway workers put on the wire for monitors, read with raw clients (docs/celery-wire.md
§3.5, §3.6, §4.1, §7.3): task events batched as ``task.multi``, heartbeats on ``worker.heartbeat``,
and the pidbox binding of each worker."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

from remote_support import Cluster, wait_until
from services import rabbitmqctl

SEP = "\x06\x16"


def _redis_events(cluster: Cluster, send: Any) -> list[tuple[str, Any]]:
    import redis

    prefix = cluster.env["REMOTE_PREFIX"]
    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    pubsub = client.pubsub()
    try:
        pubsub.psubscribe(f"{prefix}/0.celeryev/*")
        wait_until(lambda: pubsub.get_message(timeout=0.1), what="the subscription")
        send()
        seen: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            raw = pubsub.get_message(timeout=0.2)
            if raw and raw["type"] == "pmessage":
                envelope = json.loads(raw["data"])
                body = json.loads(base64.b64decode(envelope["body"]))
                seen.append((raw["channel"].decode().removeprefix(prefix), body))
            if {key for key, _ in seen} >= {"/0.celeryev/task.multi",
                                            "/0.celeryev/worker.heartbeat"}:  # fmt: skip
                break
        members = client.smembers(f"{prefix}_kombu.binding.celery.pidbox")
        assert f"{SEP}{SEP}alpha@remote.celery.pidbox".encode() in members
        return seen
    finally:
        pubsub.close()
        client.close()


def _amqp_events(cluster: Cluster, send: Any) -> list[tuple[str, Any]]:
    from caraway.engines.amqp.client import connect, parse_url

    conn = connect(parse_url(cluster.env["REMOTE_BROKER"]))
    try:
        channel = conn.channel()
        queue, _, _ = channel.queue_declare(exclusive=True, auto_delete=True)
        channel.queue_bind(queue, "celeryev", "#")
        seen: list[tuple[str, Any]] = []
        channel.basic_consume(
            queue, no_ack=True,
            callback=lambda m: seen.append(
                ("/0.celeryev/" + m.delivery_info["routing_key"], json.loads(m.body))
            ),
        )  # fmt: skip
        send()
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline and {key for key, _ in seen} < {
            "/0.celeryev/task.multi", "/0.celeryev/worker.heartbeat"
        }:  # fmt: skip
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
        # The worker's control queue, with Celery's flags and arguments (docs/celery-wire.md §4.1).
        vhost = cluster.env["REMOTE_BROKER"].rsplit("/", 1)[1]
        listed = rabbitmqctl("list_queues", "-p", vhost, "name", "exclusive", "arguments")
        [line] = [line for line in listed.splitlines() if "alpha@remote.celery.pidbox" in line]
        assert "true" in line
        assert '"x-expires",10000' in line.replace(" ", "")
        assert '"x-message-ttl",300000' in line.replace(" ", "")
        return seen
    finally:
        conn.close()


def test_task_events_travel_as_task_multi_and_heartbeats_on_their_own(cluster: Cluster) -> None:
    sent: list[Any] = []
    read = _redis_events if cluster.kind == "redis" else _amqp_events  # type: ignore[attr-defined]

    seen = read(cluster, lambda: sent.append(cluster.module.add.apply_async((4, 4), queue="alpha")))

    batches = [body for key, body in seen if key == "/0.celeryev/task.multi"]
    assert batches
    assert all(isinstance(body, list) for body in batches)
    mine = [event for body in batches for event in body if event.get("uuid") == sent[0].id]
    assert [event["type"] for event in mine][:1] == ["task-received"]
    beats = [body for key, body in seen if key == "/0.celeryev/worker.heartbeat"]
    assert all(body["type"] == "worker-heartbeat" for body in beats)
