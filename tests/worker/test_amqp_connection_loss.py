"""A worker whose RabbitMQ connection is cut: what it had prefetched is not run twice.

RabbitMQ requeues every unacked message of a closed channel and delivers it again; the
worker must drop its own copies that had not started (prefetched, queued in the pool, held
for an ETA) and may run again only the tasks that were running at the cut, as Celery does.
The connection goes through a proxy the test owns, so the cut has one known instant; each
run is logged with its times in a side-channel file. One vhost for the module.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp_support import rabbit_vhost
from proxies import TcpProxy
from services import require
from worker_support import WAIT, wait_until

from caraway import Celery

SHORT, ETA = 30, 3
#: Slack around the cut instant: an ack written just before it may still be in the proxy,
#: and a task that passed its start check just before may note its start later (load).
SLACK = 0.5


@pytest.fixture(scope="module")
def rabbit() -> Iterator[str]:
    with rabbit_vhost("cut") as url:
        yield url


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(require("rabbitmq"))
    yield proxy
    proxy.close()


def read_runs(path: Path) -> list[tuple[int, float, float | None]]:
    """``(task, started, ended or None)`` per run, in start order, from the side channel."""
    runs: list[tuple[int, float, float | None]] = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        task, when, what = line.split()
        if what == "start":
            runs.append((int(task), float(when), None))
        else:  # the last unfinished run of that task ended
            i = max(i for i, run in enumerate(runs) if run[0] == int(task) and run[2] is None)
            runs[i] = (int(task), runs[i][1], float(when))
    return runs


@pytest.mark.parametrize(
    ("pause", "rate"),
    [(0.2, None), (0.02, "10/s")],
    ids=["queued-in-the-pool", "held-for-a-rate-limit"],
)
def test_a_cut_connection_reruns_only_the_tasks_running_at_the_cut(
    pause: float,
    rate: str | None,
    rabbit: str,
    proxy: TcpProxy,
    start_worker: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery(
        "amqp-cut", broker=proxy.url(rabbit), set_as_current=False, task_default_queue="cut",
        task_acks_late=True,
    )  # fmt: skip
    side = tmp_path / "runs.txt"

    @app.task(rate_limit=rate)
    def work(n: int, pause: float) -> None:
        with side.open("a") as out:
            out.write(f"{n} {time.time():.4f} start\n")
        time.sleep(pause)
        with side.open("a") as out:
            out.write(f"{n} {time.time():.4f} end\n")

    expected = {*range(SHORT), *(1000 + n for n in range(ETA))}

    def all_done() -> bool:
        runs = read_runs(side)
        return {run[0] for run in runs} == expected and all(run[2] for run in runs)

    try:
        # A window of 16 on 2 threads: 14 prefetched, queued in the pool or held for a
        # rate-limit token, while 2 run.
        start_worker(app, pool="threads", concurrency=2, prefetch_multiplier=8)
        for n in range(ETA):  # held by the worker until their ETA, past the cut
            work.apply_async((1000 + n, 0.0), countdown=2.5)
        for n in range(SHORT):
            work.delay(n, pause)
        wait_until(lambda: len(read_runs(side)) >= 5, what="a few runs")

        caplog.set_level(logging.WARNING, logger="caraway")
        cut_at = proxy.sever()

        wait_until(all_done, timeout=3 * WAIT, what="every task run")
        wait_until(lambda: app.broker.size("cut") == 0, what="an empty queue")
        time.sleep(0.5)  # room for a late second run
        wait_until(all_done, what="the last runs")
    finally:
        app.close()

    runs = read_runs(side)
    assert {run[0] for run in runs} == expected  # none lost
    counts = collections.Counter(task for task, _, _ in runs)
    first_runs = {task: (started, ended) for task, started, ended in reversed(runs)}
    running_at_cut = {
        task for task, (started, ended) in first_runs.items()
        if started < cut_at + SLACK and ended is not None and ended > cut_at - SLACK
    }  # fmt: skip
    twice = {task for task, count in counts.items() if count > 1}
    assert twice <= running_at_cut, f"ran twice: {sorted(twice)}; at the cut: {running_at_cut}"
    assert max(counts.values()) <= 2
    assert "prefetched message(s) dropped" in caplog.text
