"""``worker_disable_prefetch`` / ``--disable-prefetch``: no message waits in a busy worker."""

from __future__ import annotations

import signal
import time

from worker_support import WAIT, WorkerProject


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
