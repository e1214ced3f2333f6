"""A Redis Cluster master SIGKILLed under load, with ``acks_late``: its replica takes over
(``cluster-node-timeout`` 2 s) and the workers carry on through redis-py's cluster client.

The master killed is the one serving the queue's slot (its lists and unacked bookkeeping),
once its replica has caught up (replication is asynchronous: what a dying master had not
passed on is lost in any case). Results are spread over every master, so some of them are
on it too, and a client waiting for a result is subscribed there when it dies. Counted
twice: by the ledger (nothing lost, only tasks running at the fault ran twice, no message
left behind) and by the results (every task's result is stored, and is what it returned).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from fault_workers import FaultProject, check
from polling import poll
from redis.cluster import ClusterNode, RedisCluster
from redis_cluster import PrivateCluster, own_cluster

from caraway import states

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)

#: Longer than the failover and the reconnection together, so that the messages the worker
#: holds (and renews once the slot has a master again) do not expire under it.
FAILOVER_LEASE = 10.0
QUEUE = "celery"


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A cluster of this test's own: it kills one of its masters."""
    with own_cluster() as made:
        yield made


def _client(cluster: PrivateCluster) -> RedisCluster:
    live = [ClusterNode("127.0.0.1", port) for port in cluster.ports if cluster.running(port)]
    return RedisCluster(startup_nodes=live, socket_timeout=2)


def _queue_master(cluster: PrivateCluster) -> int:
    client = _client(cluster)
    try:
        node = client.get_node_from_key(f"{{{QUEUE}}}")
        return int(node.port)
    finally:
        client.close()


def _task_id_on(cluster: PrivateCluster, port: int) -> str:
    """A task id whose result key (and so its result's channel) is on the master ``port``."""
    client = _client(cluster)
    try:
        while True:
            task_id = str(uuid.uuid4())
            if client.get_node_from_key(f"celery-task-meta-{task_id}").port == port:
                return task_id
    finally:
        client.close()


def _subscribers(port: int, channel: str) -> int:
    client = redis.Redis(port=port)
    try:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
    finally:
        client.close()


class _Waiter:
    """``AsyncResult(task_id).get()`` in a thread, started before the fault: its
    subscription is on the master about to die, so it must subscribe again elsewhere."""

    def __init__(self, project: FaultProject, task_id: str) -> None:
        self.task_id = task_id
        self.channel = f"celery-task-meta-{task_id}"
        self.outcome: list[object] = []
        self.thread = threading.Thread(
            target=lambda: self.outcome.append(project.app.AsyncResult(task_id).get(timeout=60)),
            daemon=True,
        )
        self.thread.start()


def _queue_empty(cluster: PrivateCluster) -> Callable[[], bool]:
    """Whether the queue holds no message, waiting or unacked (False while unreachable)."""

    def empty() -> bool:
        client = _client(cluster)
        try:
            lists = [f"{{{QUEUE}}}", *(f"{{{QUEUE}}}\x06\x16{step}" for step in (3, 6, 9))]
            waiting = sum(int(client.llen(key)) for key in lists)
            return waiting + int(client.hlen(f"{{{QUEUE}}}.unacked")) == 0
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            return False
        finally:
            client.close()

    return empty


@pytest.mark.parametrize(("pool", "concurrency"), [("threads", 4), ("prefork", 2)])
def test_a_master_killed_under_load_loses_no_task(
    cluster: PrivateCluster, fault_project: Callable[..., FaultProject], pool: str, concurrency: int
) -> None:
    project = fault_project(
        broker_url=cluster.url,
        result_backend=cluster.url,
        broker_transport_options={"visibility_timeout": FAILOVER_LEASE},
    )
    project.spawn(pool, concurrency)
    project.wait_ready()
    ids = project.send(60)
    project.wait_ended(10)

    victim = _queue_master(cluster)
    waiter = _Waiter(project, _task_id_on(cluster, victim))
    poll(lambda: _subscribers(victim, waiter.channel), 10.0, "the waiter to subscribe")
    cluster.wait_replicated(victim, f"{{{QUEUE}}}.caught-up")
    killed_at = time.time()
    cluster.kill(victim)
    fault = (killed_at, time.time())
    cluster.wait_failover(victim)
    assert _queue_master(cluster) != victim, "a replica took over the queue's slot"

    recovery, probes = project.resume()
    project.tasks.work.apply_async((0.05,), task_id=waiter.task_id)
    waiter.thread.join(30.0)
    assert waiter.outcome == [waiter.task_id], "a wait subscribed on the killed master"

    every = ids + probes
    check(project, every, fault, _queue_empty(cluster), f"redis-cluster-failover/{pool}", recovery)

    metas = project.app.backend.get_many_task_meta(every)
    assert [(m["status"], m["result"]) for m in metas] == [
        (states.SUCCESS, task_id) for task_id in every
    ]
