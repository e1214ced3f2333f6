"""One Celery worker and one caraway worker on the same queue, fed by both kinds of client:
every message runs exactly once with early acks, and none is lost with late acks when a
worker is SIGKILLed mid-task (docs/celery-wire.md §3.7: both sides share ``visibility_timeout``).

Each task leaves a ``start`` and a ``done`` marker file named after its number and the
library that ran it, so the test counts executions without a result backend.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from interop_support import VISIBILITY_TIMEOUT, WAIT, Workers, read_markers, wait_until

MIXED = "mixed"


@pytest.fixture(scope="module")
def pool(workers: Workers) -> Workers:
    workers.start("celery", MIXED, ready=False)
    workers.start("caraway", MIXED, ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


def send_half_from_each(
    celery_client: Any, caraway_client: Any, name: str, n: int, seconds: float, tag: str, queue: str
) -> None:
    for i in range(n):
        client = celery_client if i % 2 else caraway_client
        client.tasks[name].apply_async((i, seconds, tag), queue=queue)


def test_a_mixed_pool_runs_every_message_exactly_once(
    pool: Workers, celery_client: Any, caraway_client: Any, marker_dir: Path
) -> None:
    n, tag = 40, uuid.uuid4().hex

    send_half_from_each(celery_client, caraway_client, "interop.slow", n, 0.02, tag, MIXED)

    wait_until(lambda: len(read_markers(marker_dir, "done", tag)) >= n, WAIT, f"{n} tasks")
    time.sleep(0.5)  # room for a duplicate to show up
    done = read_markers(marker_dir, "done", tag)
    runs = Counter(int(i) for i, _lib in done)
    assert runs == Counter(range(n))
    assert {lib for _i, lib in done} == {"celery", "caraway"}


@pytest.mark.parametrize("victim", ["celery", "caraway"])
def test_late_acks_lose_nothing_when_a_worker_is_killed_mid_task(
    workers: Workers,
    celery_client: Any,
    caraway_client: Any,
    marker_dir: Path,
    victim: str,
) -> None:
    n, tag = 12, uuid.uuid4().hex
    queue = f"late.{tag[:8]}"
    survivor_kind = "caraway" if victim == "celery" else "celery"
    doomed = workers.start(victim, queue, ready=False)
    survivor = workers.start(survivor_kind, queue, ready=False)
    doomed.wait_ready()
    survivor.wait_ready()

    send_half_from_each(celery_client, caraway_client, "interop.slow_late", n, 0.4, tag, queue)
    started_by_victim = wait_until(
        lambda: [i for i, lib in read_markers(marker_dir, "start", tag) if lib == victim],
        WAIT, f"the {victim} worker to start a task",
    )  # fmt: skip
    doomed.kill()
    restarted = workers.start(victim, queue)

    # On Redis the killed worker's messages come back once their lease of
    # VISIBILITY_TIMEOUT s runs out and a restore runs (every 5 s on caraway).
    deadline = WAIT + 2 * VISIBILITY_TIMEOUT + 5
    wait_until(
        lambda: {int(i) for i, _ in read_markers(marker_dir, "done", tag)} == set(range(n)),
        deadline, f"all {n} tasks done",
    )  # fmt: skip
    done = {int(i) for i, _lib in read_markers(marker_dir, "done", tag)}
    assert done == set(range(n))
    assert {int(i) for i in started_by_victim} <= done
    for worker in (survivor, restarted):
        worker.stop()
