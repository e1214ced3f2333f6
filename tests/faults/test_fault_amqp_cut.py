"""A RabbitMQ connection cut under load, with ``acks_late``.

The worker reaches RabbitMQ through a TCP proxy the test owns, on a vhost of its own; the
cut resets every connection and turns new ones away for 2 s. RabbitMQ requeues every
message unacked on the dead channel: the worker must drop the deliveries it had prefetched
on that channel (RabbitMQ delivers them again) and may run again only the tasks that were
running at the cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fault_workers import FaultProject, check
from proxies import TcpProxy
from services import rabbitmq_vhost, rabbitmqctl, require

#: Each wait inside is bounded; the sum of the bounds exceeds pytest's default 60 s.
pytestmark = pytest.mark.timeout(150)

REFUSE_FOR = 2.0
#: A task that ended just before the cut is not settled until its ack reaches RabbitMQ: an
#: ack still in the worker's buffer or the proxy's when the cut comes is lost with the
#: connection, and the task runs again (at least once). Such a task counts as running at the
#: fault; the consuming thread sends acks within a drain slice (50 ms), so 0.25 s is ample.
ACK_IN_FLIGHT = 0.25


@pytest.fixture
def vhost_url() -> Iterator[str]:
    with rabbitmq_vhost("caraway-faults") as url:
        yield url


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    relay = TcpProxy(require("rabbitmq"))
    try:
        yield relay
    finally:
        relay.close()


def queue_empty(url: str) -> Callable[[], bool]:
    """Whether the ``celery`` queue holds no message, ready or unacked."""
    vhost = url.rsplit("/", 1)[1]

    def empty() -> bool:
        out = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
        rows = dict(line.split("\t") for line in out.splitlines())
        return rows.get("celery", "0") == "0"

    return empty


def test_a_rabbitmq_connection_cut_under_load(
    vhost_url: str, proxy: TcpProxy, fault_project: Callable[..., FaultProject]
) -> None:
    project = fault_project(broker_url=vhost_url)
    behind_proxy = vhost_url.replace(f":{require('rabbitmq')[1]}/", f":{proxy.port}/")
    project.spawn("threads", 4, env={"FAULT_BROKER_URL": behind_proxy})
    project.wait_ready()
    ids = project.send(60)
    project.wait_ended(10)

    cut_at = proxy.sever(REFUSE_FOR)
    fault = (cut_at - ACK_IN_FLIGHT, time.time())
    time.sleep(REFUSE_FOR)

    recovery, probes = project.resume()
    check(project, ids + probes, fault, queue_empty(vhost_url), "amqp-cut/threads", recovery)
