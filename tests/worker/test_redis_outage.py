"""A short Redis outage under a worker with ``acks_late``: nothing hangs, nothing runs twice.

Each test runs its own ``redis-server`` (AOF, fsync always, in ``tmp_path``) on a free port,
SIGKILLs it while short tasks run, and starts it again on the same port with the same data.
Every run is recorded by task id in a file (a side channel the outage cannot touch). The
shared server on 6379 is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from private_redis import PrivateRedis
from worker_support import WAIT, wait_until

from caraway import Celery
from caraway.engines.base.broker import SettlementKept
from caraway.engines.registry import create_broker
from caraway.exceptions import Unreachable

#: How long the worker may take to run again once Redis is back.
RESUME_WITHIN = 15.0
#: How long Redis stays away: long enough for acks to fail, short beside the 1 h lease.
OUTAGE = 2.5
#: Tasks per pool slot: each runs 0.2 s, so the pool is busy for about 3 s.
TASKS_PER_SLOT = 15

TASKS_SOURCE = """
import json
import os
import time
from pathlib import Path

from caraway import Celery

RUNS = Path(__file__).resolve().parent / "runs"
app = Celery("outage", broker=os.environ["OUTAGE_URL"], task_acks_late=True,
             task_ignore_result=True)


def note(event, key):
    with open(RUNS, "a") as f:
        f.write(json.dumps([event, key, time.time()]) + "\\n")


@app.task(name="outage.short")
def short(key):
    note("start", key)
    time.sleep(0.2)
    note("end", key)


@app.task(name="outage.together")
def together(key, n):
    note("start", key)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = RUNS.read_text().splitlines()
        if sum('"start", "together' in line for line in lines) >= n:
            break
        time.sleep(0.02)
    note("end", key)
"""


class Outage:
    """The private Redis, a worker process on it, and the record of every run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = PrivateRedis(root / "redis")
        self.url = f"redis://127.0.0.1:{self.server.port}/0"
        (root / "outage_tasks.py").write_text(TASKS_SOURCE)
        self.app = Celery("outage", broker=self.url, task_ignore_result=True)
        self.raw = redis.Redis(port=self.server.port)
        self.worker: subprocess.Popen[bytes] | None = None
        self.log = root / "worker.log"

    def spawn(self, pool: str, concurrency: int) -> None:
        code = (
            "import outage_tasks as m; "
            f"m.app.Worker(pool={pool!r}, concurrency={concurrency}, setup_logging=True,"
            " loglevel='INFO').start()"
        )
        path = os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, "OUTAGE_URL": self.url}
        with open(self.log, "wb") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-c", code], cwd=self.root, env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def send(self, name: str, key: str, *args: Any) -> None:
        self.app.send_task(name, args=[key, *args])

    def runs(self) -> list[tuple[str, str, float]]:
        path = self.root / "runs"
        if not path.exists():
            return []
        return [tuple(json.loads(line)) for line in path.read_text().splitlines()]  # type: ignore[misc]

    def ended(self, prefix: str) -> Counter[str]:
        runs = self.runs()
        return Counter(key for event, key, _ in runs if event == "end" and key.startswith(prefix))

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait(WAIT)
        self.app.close()
        self.raw.close()
        self.server.kill()
        if self.log.exists():  # shown by pytest only when the test failed
            print(self.log.read_text(errors="replace"))


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    scene = Outage(tmp_path)
    scene.server.start()
    try:
        yield scene
    finally:
        scene.close()


@pytest.mark.parametrize(
    ("pool", "concurrency"), [("threads", 4), ("prefork", 2), ("solo", 1), ("asyncio", 4)]
)
def test_a_redis_outage_under_acks_late_neither_hangs_nor_repeats(
    outage: Outage, pool: str, concurrency: int
) -> None:
    outage.spawn(pool, concurrency)
    outage.send("outage.short", "warmup")
    wait_until(lambda: outage.ended("warmup"), 20.0, "the worker to serve")

    tasks = TASKS_PER_SLOT * concurrency
    for n in range(tasks):
        outage.send("outage.short", f"t{n}")
    wait_until(lambda: len(outage.ended("t")) >= 3 * concurrency, what="tasks to run")
    outage.server.kill()
    cut = time.time()
    time.sleep(OUTAGE)
    outage.server.start()
    back = time.monotonic()

    wait_until(
        lambda: len(outage.ended("t")) == tasks, RESUME_WITHIN, "every task to run after the outage"
    )
    # The pool has every slot: `concurrency` tasks that wait for each other all run at once.
    for n in range(concurrency):
        outage.send("outage.together", f"together{n}", concurrency)
    wait_until(lambda: len(outage.ended("together")) == concurrency, RESUME_WITHIN, "a full pool")
    runs = outage.runs()
    starts = [at for event, key, at in runs if event == "start" and key.startswith("together")]
    ends = [at for event, key, at in runs if event == "end" and key.startswith("together")]
    assert max(starts) < min(ends), "the pool lost slots: the 'together' tasks did not overlap"
    assert time.monotonic() - back < 2 * RESUME_WITHIN  # the two waits above, together

    # Acks of tasks finished during the outage are sent once Redis is back, not in an hour.
    wait_until(lambda: outage.raw.hlen("unacked") == 0, what="every ack to reach Redis")
    assert outage.raw.zcard("unacked_index") == 0
    # Each task's first start and first end (a rerun's times come later in the list).
    started = {key: at for event, key, at in reversed(runs) if event == "start"}
    ended = {key: at for event, key, at in reversed(runs) if event == "end"}
    running_at_cut = {key for key, at in started.items() if at <= cut <= ended.get(key, cut)}
    twice = {key for key, count in outage.ended("t").items() if count > 1}
    assert twice <= running_at_cut, f"tasks not running at the cut ran again: {twice}"

    log = outage.log.read_text(errors="replace")
    assert "Exception in thread" not in log
    assert "Internal error running" not in log
    assert outage.worker is not None
    assert outage.worker.poll() is None


def test_settlements_that_find_redis_away_are_sent_once_it_is_back(outage: Outage) -> None:
    ids = [outage.app.send_task("outage.short", args=[f"k{n}"]).id for n in range(3)]
    broker = create_broker(outage.url)
    try:
        done, back, aside = broker.fetch(["celery"], 3, WAIT)
        assert [d.message.task_id for d in (done, back, aside)] == ids
        outage.server.kill()
        with pytest.raises(Unreachable):  # the broker sees Redis away
            broker.fetch(["celery"], 1, 0.1)
        with pytest.raises(SettlementKept):
            broker.ack([done.tag])
        with pytest.raises(SettlementKept):
            broker.release([back.tag])
        with pytest.raises(SettlementKept):
            broker.dead_letter(aside, "cannot run here")
        outage.server.start()

        again = wait_until(lambda: broker.fetch(["celery"], 3, 0.2), what="a fetch")
        letters = broker.dead_letters()
    finally:
        broker.close()
    assert [(d.message.task_id, d.redelivered) for d in again] == [(ids[1], True)]
    assert outage.raw.hkeys("unacked") == [str(back.tag).encode()]  # fetched again
    [letter] = letters
    assert (letter.message.task_id, letter.reason) == (ids[2], "cannot run here")


def test_an_ack_redis_never_ran_is_sent_again_though_its_thread_stays_idle(
    outage: Outage,
) -> None:
    outage.app.send_task("outage.short", args=["k"])
    broker = create_broker(outage.url)
    try:
        [delivery] = broker.fetch(["celery"], 1, WAIT)
        outage.raw.client_pause(int(WAIT * 1000), all=False)  # writes wait, unprocessed
        acker = threading.Thread(target=broker.ack, args=([delivery.tag],))
        acker.start()  # pipelined: written on the thread's own connection, never read back
        acker.join(WAIT)
        outage.server.kill()  # the ack dies with Redis, unrun
        outage.server.start()
        assert outage.raw.hlen("unacked") == 1

        def settled() -> bool:
            broker.fetch(["celery"], 1, 0.1)  # finds Redis back, then sends the ack again
            return outage.raw.hlen("unacked") == 0

        wait_until(settled, what="the ack to be sent again")
    finally:
        broker.close()
