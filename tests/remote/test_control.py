"""``control`` commands against two real workers: each one changes the worker."""

from __future__ import annotations

import time
import uuid
from typing import Any

from click.testing import CliRunner
from remote_support import Cluster, wait_until

from caraway.cli.main import cli


def control(cluster: Cluster, method: str, node: str, **arguments: Any) -> Any:
    return cluster.app.control.broadcast(
        method, arguments=arguments, destination=[node], reply=True, timeout=5.0
    )


def test_rate_limit_holds_then_lifts(cluster: Cluster) -> None:
    reply = control(
        cluster, "rate_limit", "beta@remote", task_name="remote.stamp", rate_limit="4/s"
    )
    assert reply == [{"beta@remote": {"ok": "new rate limit set successfully"}}]
    tag = uuid.uuid4().hex
    for n in range(4):
        cluster.module.stamp.apply_async((tag, n), queue="beta")
    marks = wait_until(lambda: len(cluster.marks(tag)) == 4 and cluster.marks(tag), what="4 runs")
    registered = cluster.app.control.inspect(destination=["beta@remote"], timeout=5, limit=1)

    assert marks[-1][2] - marks[0][2] >= 0.6  # 4 tokens at 4/s: the last 0.75 s after the first
    assert "remote.stamp [rate_limit=4/s]" in registered.registered()["beta@remote"]
    reply = control(cluster, "rate_limit", "beta@remote", task_name="remote.stamp", rate_limit=0)
    assert reply == [{"beta@remote": {"ok": "rate limit disabled successfully"}}]
    assert control(cluster, "rate_limit", "beta@remote", task_name="nope", rate_limit="1/s") == [
        {"beta@remote": {"error": "unknown task 'nope'"}}
    ]


def test_add_consumer_then_cancel_consumer(cluster: Cluster) -> None:
    queue, tag = f"extra{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    app = cluster.app

    assert app.control.add_consumer(queue, destination=["alpha@remote"], timeout=5) == [
        {"alpha@remote": {"ok": f"add consumer {queue}"}}
    ]
    cluster.module.stamp.apply_async((tag, 1), queue=queue)
    [(_, host, _)] = wait_until(lambda: cluster.marks(tag), what="a run from the new queue")
    assert host == "alpha@remote"

    assert app.control.cancel_consumer(queue, destination=["alpha@remote"], timeout=5) == [
        {"alpha@remote": {"ok": f"no longer consuming from {queue}"}}
    ]
    cluster.module.stamp.apply_async((tag, 2), queue=queue)
    time.sleep(1.0)  # room for a wrong run to show up
    assert len(cluster.marks(tag)) == 1
    assert app.broker.size(queue) == 1
    assert app.control.purge_queues([queue]) == {queue: 1}


def test_purge_removes_exactly_the_queued_messages(cluster: Cluster) -> None:
    app = cluster.app
    first, second = f"p1{uuid.uuid4().hex[:6]}", f"p2{uuid.uuid4().hex[:6]}"
    for n in range(5):
        cluster.module.add.apply_async((n, n), queue=first)
    for n in range(2):
        cluster.module.add.apply_async((n, n), queue=second)

    result = CliRunner().invoke(cli, ["purge", "-Q", first, "-f"], obj=_state(cluster))

    assert result.exit_code == 0, result.output
    assert f"Purged 5 messages from queue {first}." in result.output
    assert app.broker.size(first) == 0
    assert app.broker.size(second) == 2
    assert app.control.purge_queues([second]) == {second: 2}


def _state(cluster: Cluster) -> Any:
    from caraway.cli.base import CLIState

    return CLIState(cluster.app)


def test_revoke_terminate_stops_a_running_task(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    result = cluster.module.sleep.apply_async((5.0, tag, 1), queue="beta")
    inspect = cluster.app.control.inspect(destination=["beta@remote"], timeout=5, limit=1)
    wait_until(lambda: (inspect.active() or {}).get("beta@remote"), what="the task to start")

    replies = cluster.app.control.revoke(result.id, terminate=True, reply=True, timeout=5, limit=2)

    assert {"beta@remote": {"ok": f"terminate: {result.id}"}} in replies
    wait_until(lambda: (inspect.active() or {}).get("beta@remote") == [], 3.0, "the task to end")
    assert result.id in inspect.revoked()["beta@remote"]
    assert cluster.marks(tag) == []  # it never reached its end


def test_time_limit_applies_to_the_next_run(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex
    reply = control(cluster, "time_limit", "beta@remote", task_name="remote.sleep", hard=0.3)
    assert reply == [{"beta@remote": {"ok": "time limits set successfully"}}]
    cluster.module.sleep.apply_async((1.0, tag, 1), queue="beta")
    cluster.module.stamp.apply_async((tag, 2), queue="beta")
    wait_until(lambda: [m for m in cluster.marks(tag) if m[0] == 2], what="the next task")
    control(cluster, "time_limit", "beta@remote", task_name="remote.sleep", soft=None, hard=None)
    wait_until(lambda: "exceeded its hard time limit" in cluster.nodes[1].output(), 3.0,
               "the time limit in beta's log")  # fmt: skip
    assert [m[0] for m in cluster.marks(tag)] == [2]


def test_pool_grow_and_shrink(cluster: Cluster) -> None:
    inspect = cluster.app.control.inspect(destination=["beta@remote"], timeout=5, limit=1)

    assert control(cluster, "pool_grow", "beta@remote", n=2) == [
        {"beta@remote": {"ok": "pool will grow"}}
    ]
    assert inspect.stats()["beta@remote"]["pool"]["max-concurrency"] == 4
    assert control(cluster, "pool_shrink", "beta@remote", n=2) == [
        {"beta@remote": {"ok": "pool will shrink"}}
    ]
    assert inspect.stats()["beta@remote"]["pool"]["max-concurrency"] == 2
    assert control(cluster, "autoscale", "beta@remote", max=4, min=1)[0]["beta@remote"]["error"]


def test_a_revoked_id_reaches_a_worker_started_later_and_shutdown_stops_it(
    cluster: Cluster,
) -> None:
    tag, task_id = uuid.uuid4().hex, str(uuid.uuid4())
    cluster.app.control.revoke(task_id)
    late = cluster.start("gamma", "-Q", "gamma", "-c", "1")

    cluster.module.stamp.apply_async((tag, 1), queue="gamma", task_id=task_id)
    cluster.module.stamp.apply_async((tag, 2), queue="gamma")
    wait_until(lambda: cluster.marks(tag), what="the second task")
    assert [m[0] for m in cluster.marks(tag)] == [2]

    result = CliRunner().invoke(cli, ["control", "shutdown", "-d", late.hostname, "-t", "5"],
                                obj=_state(cluster))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "shutting down" in result.output
    assert late.proc.wait(timeout=10) == 0
