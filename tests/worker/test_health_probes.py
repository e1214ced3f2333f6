"""``--health-port``: liveness follows the pool's slots, the bind address is chosen, and
the answers carry nothing an onlooker could use."""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from worker_support import WAIT, WorkerProject, memory_app, wait_until

from caraway.exceptions import WorkerLostError
from caraway.worker.pools.aio import AsyncioPool
from caraway.worker.pools.threads import ThreadPool


def answer(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str, str]:
    """(status, body, Server header) of a probe."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as reply:
            return int(reply.status), reply.read().decode(), reply.headers.get("Server", "")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(), error.headers.get("Server", "")


#: A pool thread ended on purpose: pytest reports any thread that ends by an exception.
ENDS_A_THREAD = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _die() -> None:
    """Work that ends its pool thread: what an exception escaping the loop used to do."""
    raise SystemExit("slot lost")


@ENDS_A_THREAD
def test_a_dead_thread_slot_fails_livez_and_readyz_stays_up(
    start_worker: Callable[..., Any],
) -> None:
    app = memory_app("health-dead-slot")
    worker = start_worker(app, pool="threads", concurrency=2, health_port=0)
    port = worker.health.port
    assert answer(port, "/livez")[0] == 200

    worker.consumer.pool.submit(_die)

    wait_until(lambda: answer(port, "/livez")[0] == 503, what="livez to fail")
    assert answer(port, "/readyz")[0] == 200  # still consuming: only liveness says restart


def test_a_sigkilled_prefork_child_is_replaced_and_the_worker_stays_live(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    project.spawn(pool="prefork", concurrency=2, options={"health_port": port})
    project.ping()
    held = project.tasks.hold.delay("k")
    [mark] = project.wait_marks("k", 1)

    os.kill(mark["pid"], signal.SIGKILL)

    with pytest.raises(WorkerLostError):
        held.get(timeout=WAIT)
    pids = {project.tasks.pid.delay().get(timeout=WAIT) for _ in range(6)}
    assert mark["pid"] not in pids
    assert answer(port, "/livez")[0] == 200
    assert answer(port, "/readyz")[0] == 200


@ENDS_A_THREAD
def test_the_pools_count_their_live_slots() -> None:
    threads = ThreadPool(3)
    threads.start()
    try:
        assert threads.live_slots() == 3
        threads.submit(_die)
        wait_until(lambda: threads.live_slots() == 2, what="a slot to die")
        assert threads.limit == 3
    finally:
        threads.stop()
    shrunk = ThreadPool(3)
    shrunk.start()
    try:
        shrunk.shrink(1)  # a slot given up on purpose is no loss
        wait_until(lambda: shrunk.live_slots() == 2, what="the shrink")
        assert shrunk.limit == 2
    finally:
        shrunk.stop()
    loop = AsyncioPool(5)
    loop.start()
    assert loop.live_slots() == 5
    loop.stop()
    assert loop.live_slots() == 0


def test_the_probes_bind_the_address_given_and_say_nothing_more(
    start_worker: Callable[..., Any],
) -> None:
    app = memory_app("health-address", worker_health_address="127.0.0.1")
    worker = start_worker(app, pool="threads", concurrency=1, health_port=0)
    host, port = worker.health._server.server_address[:2]
    assert host == "127.0.0.1"

    for path, status in (("/livez", 200), ("/readyz", 200), ("/nope", 404)):
        code, body, server = answer(port, path)
        assert code == status
        assert "memory://" not in body
        assert "Python" not in server
        assert len(body) < 50

    other = start_worker(memory_app("health-flag"), pool="threads", health_port=0,
                         health_address="127.0.0.1")  # fmt: skip
    assert other.health._server.server_address[0] == "127.0.0.1"


def test_an_ipv6_health_address(start_worker: Callable[..., Any]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    worker = start_worker(memory_app("health-v6"), pool="threads", health_port=0,
                          health_address="::1")  # fmt: skip
    assert worker.health._server.server_address[0] == "::1"
    assert answer(worker.health.port, "/livez", host="[::1]")[0] == 200
