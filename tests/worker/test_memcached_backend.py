"""A real worker storing results in two private memcached servers (``cache+memcached://a;b/``):
tasks, groups and a chord, whose header results workers read back (``chord_unlock``)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from private_memcached import PrivateMemcached
from worker_support import WAIT, ThreadedWorker

from caraway import Celery, chord, group


def _items(port: int) -> int:
    """How many keys the server at ``port`` holds (its ``stats`` reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(65536)
    stats = dict(line.split()[1:3] for line in reply.decode().splitlines() if line.count(" ") >= 2)
    return int(stats["curr_items"])


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    servers = [PrivateMemcached(), PrivateMemcached()]
    url = "cache+memcached://" + ";".join(f"127.0.0.1:{s.port}" for s in servers) + "/"
    app = Celery(
        "memcached-results", broker=f"memory://memcached-{uuid.uuid4().hex}", backend=url,
        result_chord_retry_interval=0.05,
    )  # fmt: skip

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    worker = ThreadedWorker(app, pool="threads", concurrency=4).start()
    try:
        yield SimpleNamespace(app=app, add=add, total=total, servers=servers)
    finally:
        worker.stop()
        app.close()
        for server in servers:
            server.stop()


def test_a_result_comes_back(served: SimpleNamespace) -> None:
    assert served.add.delay(2, 3).get(timeout=WAIT) == 5


def test_a_groups_results_spread_over_both_servers(served: SimpleNamespace) -> None:
    results = group(served.add.s(n, n) for n in range(40)).apply_async()

    assert results.get(timeout=WAIT) == [2 * n for n in range(40)]
    assert all(_items(server.port) > 0 for server in served.servers)


def test_a_chord_joins_its_header_through_the_workers_reads(served: SimpleNamespace) -> None:
    assert served.app.backend.capabilities.chord_join == "none"  # no counting in memcached

    result = chord(served.add.s(n, 1) for n in range(5))(served.total.s())

    assert result.get(timeout=WAIT) == sum(n + 1 for n in range(5))
