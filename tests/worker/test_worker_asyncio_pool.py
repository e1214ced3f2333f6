"""``-P asyncio`` in a real worker process: many ``async def`` tasks overlap on one loop."""

from __future__ import annotations

import time

from worker_support import WAIT, WorkerProject

from caraway.calling import send_batch


def test_a_thousand_sleeping_tasks_overlap_on_one_asyncio_worker_process(
    worker_project: WorkerProject,
) -> None:
    project = worker_project
    proc = project.spawn(pool="asyncio", concurrency=1000)
    project.ping()
    started = time.monotonic()

    results = send_batch(project.app, [project.tasks.nap.s(0.5) for _ in range(1000)])
    spans = [result.get(timeout=WAIT) for result in results]
    elapsed = time.monotonic() - started

    assert len(spans) == 1000
    assert {pid for pid, _, _ in spans} == {proc.pid}  # one process ran them all
    assert all(end - start >= 0.5 for _, start, end in spans)
    # One after another they would take 500 s; they overlapped on the worker's loop.
    assert elapsed < 3.0, f"1,000 tasks took {elapsed:.2f}s"
    assert project.app.broker.size("celery") == 0  # nothing waiting; acks may still be landing
