"""``worker_disable_prefetch`` / ``--disable-prefetch``: no message waits in a busy worker."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, WorkerProject, make_app, wait_until


def test_disable_prefetch_takes_a_message_only_when_a_slot_is_free(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    running = project.tasks.hold.delay("busy")
    waiting = [project.tasks.stamp.delay(f"next-{n}") for n in range(3)]
    proc = project.spawn(pool="threads", concurrency=1, options={"disable_prefetch": True})
    project.wait_marks("busy", 1)

    # The one slot is busy: the three others stay in the queue, for any worker to take.
    time.sleep(0.3)  # the subject is the absence of a fetch: give it time to happen
    assert project.app.broker.size("celery") == 3

    project.release("busy")
    assert running.get(timeout=WAIT) == "busy"
    assert all(r.get(timeout=WAIT) for r in waiting)
    assert project.stop(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize("acks_late", [False, True])
def test_the_window_counts_reserved_messages_and_unacked_running_ones(
    acks_late: bool, tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    # Celery's prefetch count: a task acked as it starts leaves the window to the next message
    # (one running, one reserved with a window of one); one acked late still holds its place.
    app = make_app("sqlite", "window", tmp_path / "b.sqlite3")
    entered, release = threading.Event(), threading.Event()

    @app.task(acks_late=acks_late)
    def hold() -> str:
        entered.set()
        assert release.wait(WAIT)
        return "held"

    @app.task
    def echo(value: int) -> int:
        return value

    start_worker(app, pool="threads", concurrency=1, prefetch_multiplier=1)
    running = hold.delay()
    assert entered.wait(WAIT)
    waiting = [echo.delay(n) for n in range(3)]

    if acks_late:
        time.sleep(0.3)  # the subject is the absence of a fetch: give it time to happen
        assert app.broker.size("celery") == 3
    else:
        wait_until(lambda: app.broker.size("celery") == 2, what="one message reserved")
        time.sleep(0.3)  # and no more than one
        assert app.broker.size("celery") == 2
    release.set()
    assert running.get(timeout=WAIT) == "held"
    assert [r.get(timeout=WAIT) for r in waiting] == [0, 1, 2]
