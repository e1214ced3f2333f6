"""``caraway worker -P gevent`` and ``-P eventlet``: real worker processes started by the
command, on Redis.

The command patches the process before anything is imported (caraway.utils.green): the
tasks' ``time.sleep`` and the Redis sockets then yield, so 50 greenlets sleep at once, and
time limits and ``revoke(terminate=True)`` reach a task blocked in a sleep. Each pool's run
has its own ``global_keyprefix``, deleted afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from services import rabbitmq_vhost, require
from worker_support import WAIT, WorkerProject, wait_until

from caraway import states
from caraway.calling import send_batch
from caraway.exceptions import TimeLimitExceeded

SOURCE = """
import asyncio
import time
from pathlib import Path

from caraway import Celery
from caraway.exceptions import SoftTimeLimitExceeded

HERE = Path(__file__).resolve().parent
app = Celery(
    "greenproj",
    broker="{url}/0",
    backend="{url}/1",
    broker_transport_options={{"global_keyprefix": "{prefix}"}},
    result_backend_transport_options={{"global_keyprefix": "{prefix}"}},
)


@app.task(name="green.nap")
def nap(seconds, key=None):
    if key:
        (HERE / f"started-{{key}}").touch()
    time.sleep(seconds)  # patched: the other greenlets run meanwhile
    if key:
        (HERE / f"finished-{{key}}").touch()
    return seconds


@app.task(name="green.soft", soft_time_limit=0.3)
def soft():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        time.sleep(0.01)  # the greenlet goes on after the soft limit
        return "cleaned up"
    return "never interrupted"


@app.task(name="green.hard", time_limit=0.3)
def hard():
    time.sleep(30)
    return "never interrupted"


@app.task(name="green.anap")
async def anap(seconds):
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="green.anap")
async def anap(seconds):
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="green.asoft", soft_time_limit=0.3)
async def asoft():
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0.01)
        return "cleaned up"
    return "never interrupted"


@app.task(name="green.patched")
def patched(pool):
    if pool == "gevent":
        from gevent.monkey import is_module_patched
        names = ("socket", "ssl", "time", "threading")
    else:
        from eventlet.patcher import is_monkey_patched as is_module_patched
        names = ("socket", "select", "time", "thread")
    return [is_module_patched(name) for name in names]
"""


SQLITE_SOURCE = """
import time
from pathlib import Path

from caraway import Celery

HERE = Path(__file__).resolve().parent
app = Celery("greensqlite", broker=f"sqlite:///{HERE}/b.sqlite3")


@app.task(name="green.nap")
def nap(seconds):
    time.sleep(seconds)
    return seconds
"""
#: ``python -m caraway``; the ``caraway`` console script beside this interpreter.
MODULE = (sys.executable, "-m", "caraway")
SCRIPT = (str(Path(sys.executable).with_name("caraway")),)


class GreenProject(WorkerProject):
    """A tasks module and the workers of one green pool."""

    def __init__(self, root: Path, source: str, pool: str) -> None:
        super().__init__(root, source)
        self.pool = pool


def spawn_cli(
    project: GreenProject, *args: str, command: tuple[str, ...] = MODULE
) -> subprocess.Popen[bytes]:
    """``caraway -A <tasks> worker -P <pool> ...``: the command line users type."""
    log = project.root / f"worker-{len(project.procs)}.log"
    path = os.pathsep.join(filter(None, [str(project.root), os.environ.get("PYTHONPATH")]))
    command = (*command, "-A", project.module_path.stem, "worker", "-P", project.pool,
               "-l", "INFO", *args)  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=project.root, env={**os.environ, "PYTHONPATH": path},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    project.procs.append((proc, log))
    return proc


@pytest.fixture(scope="module", params=["gevent", "eventlet"])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GreenProject]:
    host, port = require("redis")
    prefix = f"gtest-{uuid.uuid4().hex[:10]}:"
    source = SOURCE.format(url=f"redis://{host}:{port}", prefix=prefix)
    project = GreenProject(tmp_path_factory.mktemp(request.param), source, request.param)
    try:
        yield project
    finally:
        project.close()
        project.app.close()
        for db in (0, 1):
            with redis.Redis(host=host, port=port, db=db) as client:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)


@pytest.fixture(scope="module")
def worker(project: GreenProject) -> subprocess.Popen[bytes]:
    """One worker of 50 greenlets shared by the stories that leave it serving."""
    proc = spawn_cli(project, "-c", "50", "-n", "green@%h")
    project.ping(timeout=20)
    return proc


def test_fifty_greenlets_sleep_at_once(project: GreenProject, worker: object) -> None:
    started = time.monotonic()
    results = send_batch(project.app, [project.tasks.nap.s(0.2) for _ in range(200)])

    assert [r.get(timeout=WAIT) for r in results] == [0.2] * 200
    # One after another: 40 s; 50 at once: 4 rounds of 0.2 s plus the round trips (about
    # 1.5 s here; the bound leaves room for a loaded 2-core machine).
    assert time.monotonic() - started < 15
    # Patched before ssl or threading were imported by anything: no warning about it.
    assert project.tasks.patched.delay(project.pool).get(timeout=WAIT) == [True] * 4
    assert "MonkeyPatchWarning" not in project.log(0)  # gevent's
    assert "not greened" not in project.log(0)  # eventlet's


def test_async_def_tasks_wait_side_by_side(project: GreenProject, worker: object) -> None:
    started = time.monotonic()
    results = send_batch(project.app, [project.tasks.anap.s(0.2) for _ in range(50)])

    assert [r.get(timeout=WAIT) for r in results] == [0.2] * 50
    assert time.monotonic() - started < 5  # one after another: 10 s
    assert project.tasks.asoft.delay().get(timeout=WAIT) == "cleaned up"


def test_a_soft_time_limit_reaches_a_task_blocked_in_sleep(
    project: GreenProject, worker: object
) -> None:
    started = time.monotonic()
    assert project.tasks.soft.delay().get(timeout=WAIT) == "cleaned up"
    assert time.monotonic() - started < 5


def test_a_hard_time_limit_fails_the_task_and_the_worker_goes_on(
    project: GreenProject, worker: object
) -> None:
    result = project.tasks.hard.delay()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert project.tasks.nap.delay(0).get(timeout=WAIT) == 0


def test_revoke_terminate_stops_a_running_greenlet(project: GreenProject, worker: object) -> None:
    result = project.tasks.nap.delay(30, "revoked")
    wait_until((project.root / "started-revoked").exists, what="the task running")

    project.app.control.revoke(result.id, terminate=True)

    wait_until(lambda: result.state == states.REVOKED, what="the task revoked")
    assert project.tasks.nap.delay(0).get(timeout=WAIT) == 0  # the worker goes on
    assert not (project.root / "finished-revoked").exists()


def _stats(project: GreenProject, name: str) -> dict[str, Any]:
    replies = project.app.control.inspect(destination=[name], timeout=5, limit=1).stats() or {}
    return dict(replies[name])


def test_inspect_stats_reports_the_pool(project: GreenProject, worker: object) -> None:
    name = f"green@{socket.gethostname()}"
    stats = _stats(project, name)

    assert stats["pool"]["implementation"] == f"caraway.worker.pools:{project.pool}"
    assert stats["pool"]["max-concurrency"] == 50
    assert stats["total"]["green.nap"] >= 200


def test_the_pool_grows_and_shrinks_on_request(project: GreenProject, worker: object) -> None:
    name = f"green@{socket.gethostname()}"
    control = project.app.control

    assert control.pool_grow(10, destination=[name], reply=True, timeout=5, limit=1)
    assert _stats(project, name)["pool"]["max-concurrency"] == 60
    assert control.pool_shrink(10, destination=[name], reply=True, timeout=5, limit=1)
    assert _stats(project, name)["pool"]["max-concurrency"] == 50


def test_warm_shutdown_finishes_running_tasks_gives_back_the_prefetched_then_cold(
    project: GreenProject, worker: subprocess.Popen[bytes]
) -> None:
    """Runs last: it stops the shared worker; a second one runs what was given back."""
    worker.send_signal(signal.SIGTERM)  # the shared worker leaves: this story has its own
    assert worker.wait(WAIT) == 0
    small = spawn_cli(project, "-c", "2", "--prefetch-multiplier", "10", "-n", "small@%h")
    running = [project.tasks.nap.delay(1.5, f"running-{n}") for n in range(2)]
    waiting = send_batch(project.app, [project.tasks.nap.s(0, f"w-{n}") for n in range(18)])
    wait_until(lambda: project.app.broker.size("celery") == 0, 20, "the prefetch")

    small.send_signal(signal.SIGTERM)

    assert small.wait(WAIT) == 0
    assert [r.get(timeout=1) for r in running] == [1.5, 1.5]  # finished, not cut short
    assert all(r.state == states.PENDING for r in waiting)
    assert project.app.broker.size("celery") == 18  # given back, none lost
    after = spawn_cli(project, "-c", "5", "-n", "after@%h")
    assert [r.get(timeout=WAIT) for r in waiting] == [0] * 18
    assert len(list(Path(project.root).glob("finished-w-*"))) == 18

    # A second SIGTERM turns the warm shutdown cold: the running task stops now.
    stuck = project.tasks.nap.delay(30, "cold")
    wait_until((project.root / "started-cold").exists, what="the task running")
    after.send_signal(signal.SIGTERM)
    wait_until(lambda: "warm shutdown" in project.log(len(project.procs) - 1), what="warm")
    after.send_signal(signal.SIGTERM)

    assert after.wait(WAIT) == 1  # cold, as Celery's exit code says
    assert not (project.root / "finished-cold").exists()
    assert stuck.state == states.PENDING  # stopped mid-run: no result


def test_the_embedded_sqlite_broker_works_with_gevent(tmp_path: Path) -> None:
    """SQLite calls are C calls that hold the hub while they run: short ones, so tasks still
    wait side by side. Started by the console script this time."""
    project = GreenProject(tmp_path, SQLITE_SOURCE, "gevent")
    try:
        proc = spawn_cli(project, "-c", "20", command=SCRIPT)
        project.ping(timeout=20)
        started = time.monotonic()
        results = send_batch(project.app, [project.tasks.nap.s(0.2) for _ in range(60)])

        assert [r.get(timeout=WAIT) for r in results] == [0.2] * 60
        assert time.monotonic() - started < 6  # one after another: 12 s (here: about 1.5 s)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        assert "MonkeyPatchWarning" not in project.log(0)
    finally:
        project.close()
        project.app.close()


AMQP_SOURCE = """
import time

from caraway import Celery

app = Celery("greenamqp", broker="{url}", backend="redis://{redis}/1",
             result_backend_transport_options={{"global_keyprefix": "{prefix}"}})


@app.task(name="green.nap")
def nap(seconds):
    time.sleep(seconds)
    return seconds
"""


def test_rabbitmq_sockets_yield_under_gevent(tmp_path: Path) -> None:
    """py-amqp's socket is patched like redis-py's: consuming never holds the greenlets."""
    host, port = require("redis")
    prefix = f"gtest-{uuid.uuid4().hex[:10]}:"
    with rabbitmq_vhost("caraway-test-green") as url:
        source = AMQP_SOURCE.format(url=url, redis=f"{host}:{port}", prefix=prefix)
        project = GreenProject(tmp_path, source, "gevent")
        try:
            spawn_cli(project, "-c", "50")
            project.ping(timeout=20)
            started = time.monotonic()
            results = send_batch(project.app, [project.tasks.nap.s(0.2) for _ in range(100)])

            assert [r.get(timeout=WAIT) for r in results] == [0.2] * 100
            # One after another: 20 s; side by side about 1 s, up to 11 s seen on a loaded CI run.
            assert time.monotonic() - started < 15
        finally:
            project.close()
            project.app.close()
            with redis.Redis(host=host, port=port, db=1) as client:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    client.delete(*keys)
