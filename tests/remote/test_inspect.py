"""``inspect`` against two real workers: each answer holds the right content, from the right
worker (docs/celery-wire.md §7.2 shapes)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from remote_support import Cluster, wait_until


def inspect(cluster: Cluster, *destination: str, timeout: float = 5.0) -> Any:
    """Returns as soon as every asked worker answered (both, without a destination)."""
    return cluster.app.control.inspect(
        destination=list(destination) or None, timeout=timeout, limit=len(destination) or 2
    )


def test_ping_answers_from_each_worker_and_destination_narrows_it(cluster: Cluster) -> None:
    replies = cluster.app.control.ping(timeout=1.0)

    assert sorted(replies, key=lambda r: next(iter(r))) == [
        {"alpha@remote": {"ok": "pong"}},
        {"beta@remote": {"ok": "pong"}},
    ]
    started = time.monotonic()
    assert inspect(cluster, "beta@remote", timeout=5.0).ping() == {"beta@remote": {"ok": "pong"}}
    assert time.monotonic() - started < 4.0  # one destination: done at its answer


def test_active_shows_a_running_task_with_its_fields_on_its_worker(cluster: Cluster) -> None:
    sent_at = time.time()
    result = cluster.module.sleep.apply_async((1.5,), queue="beta")

    def running() -> Any:
        active = inspect(cluster).active() or {}
        return active if active.get("beta@remote") else None

    active = wait_until(running, what="the task in beta's active list")
    [entry] = active["beta@remote"]
    assert active["alpha@remote"] == []
    beta = next(node for node in cluster.nodes if node.hostname == "beta@remote")
    assert entry["id"] == result.id
    assert entry["name"] == entry["type"] == "remote.sleep"
    assert entry["args"] == [1.5]
    assert entry["kwargs"] == {}
    assert entry["hostname"] == "beta@remote"
    assert entry["worker_pid"] == beta.proc.pid
    assert sent_at - 1 <= entry["time_start"] <= time.time()
    assert entry["acknowledged"] is True
    assert entry["delivery_info"]["routing_key"] == "beta"
    assert entry["delivery_info"]["redelivered"] is False


def test_reserved_scheduled_query_task_and_revoked(cluster: Cluster) -> None:
    module = cluster.module
    # First: a held ETA task frees its prefetch slot, but only once it has been received.
    later = module.add.apply_async((1, 1), queue="alpha", countdown=60)
    running = module.sleep.apply_async((4.0,), queue="alpha")  # alpha runs one at a time
    waiting = [module.add.apply_async((i, i), queue="alpha") for i in range(2)]

    def reserved() -> Any:
        found = inspect(cluster, "alpha@remote").reserved() or {}
        ids = {entry["id"] for entry in found.get("alpha@remote", [])}
        return found if ids == {w.id for w in waiting} else None

    found = wait_until(reserved, what="two prefetched tasks in alpha's reserved list")
    assert all(entry["name"] == "remote.add" for entry in found["alpha@remote"])
    scheduled = wait_until(
        lambda: inspect(cluster, "alpha@remote").scheduled()["alpha@remote"],
        what="the countdown task in alpha's scheduled list",
    )
    [entry] = scheduled
    assert entry["request"]["id"] == later.id
    assert entry["eta"] > time.strftime("%Y")  # an ISO timestamp
    where = inspect(cluster, "alpha@remote").query_task(running.id, waiting[0].id, later.id)
    states = {task_id: info[0] for task_id, info in where["alpha@remote"].items()}
    assert states == {running.id: "active", waiting[0].id: "reserved", later.id: "scheduled"}

    cluster.app.control.revoke(later.id)

    revoked = wait_until(
        lambda: later.id in ((inspect(cluster).revoked() or {}).get("beta@remote") or ()),
        what="the revoked id on both workers",
    )
    assert revoked
    assert later.id in inspect(cluster, "alpha@remote").revoked()["alpha@remote"]
    cluster.app.control.revoke(running.id, terminate=True)  # frees alpha for the next tests


def test_registered_stats_active_queues_and_conf(cluster: Cluster) -> None:
    cluster.module.add.rate_limit = None
    registered = inspect(cluster).registered()
    stats = inspect(cluster, "beta@remote").stats()["beta@remote"]
    queues = inspect(cluster).active_queues()
    conf = inspect(cluster, "alpha@remote").conf()["alpha@remote"]

    assert registered == {
        host: ["remote.add", "remote.sleep", "remote.stamp"]
        for host in ("alpha@remote", "beta@remote")
    }
    assert stats["pool"]["max-concurrency"] == 2
    assert stats["pid"] == next(n.proc.pid for n in cluster.nodes if n.hostname == "beta@remote")
    assert stats["prefetch_count"] == 8
    assert {name: [q["name"] for q in found] for name, found in queues.items()} == {
        "alpha@remote": ["alpha"],
        "beta@remote": ["beta"],
    }
    assert conf["worker_prefetch_multiplier"] == 4
    assert conf["deprecated_settings"] == []  # no old setting names: Celery reports them here
    assert conf["include"] == ["caraway.builtins", "remoteproj"]  # where its tasks come from


def test_events_arrive_in_order_with_their_fields(cluster: Cluster) -> None:
    from caraway.events import EventReceiver

    events: list[dict[str, Any]] = []
    with EventReceiver(cluster.app) as receiver:
        result = cluster.module.add.apply_async((2, 3), queue="alpha")
        for event in receiver.itercapture(timeout=10.0):
            events.append(event)
            beating = {e["hostname"] for e in events if e["type"] == "worker-heartbeat"}
            done = any(e["type"] == "task-succeeded" and e["uuid"] == result.id for e in events)
            if done and beating == {"alpha@remote", "beta@remote"}:
                break

    mine = [event for event in events if event.get("uuid") == result.id]
    assert [event["type"] for event in mine] == ["task-received", "task-started", "task-succeeded"]
    received, started, succeeded = mine
    assert received["name"] == "remote.add"
    assert received["args"] == "(2, 3)"
    assert received["kwargs"] == "{}"
    assert received["root_id"] == result.id
    assert succeeded["result"] == "5"
    assert succeeded["runtime"] >= 0
    assert received["clock"] < started["clock"] < succeeded["clock"]
    for event in mine:
        assert event["hostname"] == "alpha@remote"
        assert {"utcoffset", "pid", "clock", "timestamp"} <= set(event)
    beats = [event for event in events if event["type"] == "worker-heartbeat"]
    assert {beat["hostname"] for beat in beats} == {"alpha@remote", "beta@remote"}
    for beat in beats:
        assert beat["freq"] == 2.0
        assert beat["sw_ident"] == "py-caraway"
        assert len(beat["loadavg"]) == 3
        assert isinstance(beat["processed"], int)
        assert isinstance(beat["active"], int)


def test_a_worker_without_task_events_sends_none_until_enabled(cluster: Cluster) -> None:
    from caraway.events import EventReceiver

    control = cluster.app.control
    with EventReceiver(cluster.app) as receiver:
        tag = uuid.uuid4().hex
        quiet = cluster.module.stamp.apply_async((tag, 1), queue="beta")
        wait_until(lambda: cluster.marks(tag), what="the quiet task to run")
        assert control.enable_events(destination=["beta@remote"], reply=True, timeout=5) == [
            {"beta@remote": {"ok": "task events enabled"}}
        ]
        loud = cluster.module.add.apply_async((2, 2), queue="beta")
        seen: list[dict[str, Any]] = []
        for event in receiver.itercapture(timeout=10.0, wakeup=False):
            seen.append(event)
            if event["type"] == "task-succeeded" and event["uuid"] == loud.id:
                break
    control.disable_events(destination=["beta@remote"], reply=True, timeout=5)
    # The quiet task was received and started before events were enabled; its end may race the
    # enabling (a task's events follow the switch as it is when each one is sent, as in Celery).
    quiet_types = {event["type"] for event in seen if event.get("uuid") == quiet.id}
    assert quiet_types <= {"task-succeeded"}
    assert [e["type"] for e in seen if e.get("uuid") == loud.id][-1] == "task-succeeded"


def test_unknown_method_and_no_answer(cluster: Cluster) -> None:
    control = cluster.app.control
    assert control.broadcast("no_such", reply=True, destination=["alpha@remote"], timeout=5) == [
        {"alpha@remote": {"error": "No such control command: no_such"}}
    ]
    assert inspect(cluster, f"ghost-{uuid.uuid4().hex}@remote", timeout=0.3).ping() is None


def test_on_redis_a_broadcast_ends_once_every_worker_it_reached_answered(cluster: Cluster) -> None:
    """Redis's PUBLISH counts the workers that got the request: with no destination or limit
    the caller stops at that many answers (Celery waits out the timeout); RabbitMQ does not
    say, so there the timeout still ends it."""
    started = time.monotonic()
    replies = cluster.app.control.inspect(timeout=3.0).ping() or {}
    elapsed = time.monotonic() - started

    assert sorted(replies) == ["alpha@remote", "beta@remote"]
    if cluster.kind == "redis":  # type: ignore[attr-defined]
        assert elapsed < 2.0
    else:
        assert elapsed >= 3.0
