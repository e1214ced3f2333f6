"""``rate_limit`` spaces the starts of one task's runs, and only that task's.

The worker runs on a fake clock: the tokens come every 0.2 s of its time, not of ours.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, autojump, make_app, wait_until

from caraway.utils.time import FakeClock


@pytest.mark.parametrize(("broker", "pool"), [("memory", "threads"), ("sqlite", "solo")])
def test_rate_limit_spaces_starts_per_task_name(
    broker: str, pool: str, tmp_path: Path, start_worker: Any
) -> None:
    app = make_app(broker, f"rate-{broker}", tmp_path / "b.sqlite3")
    clock = FakeClock(time.time())
    starts: dict[str, list[float]] = {"limited": [], "free": []}
    threads: set[str] = set()
    lock = threading.Lock()

    @app.task(rate_limit="5/s")
    def limited(n: int) -> int:
        with lock:
            starts["limited"].append(clock.monotonic())
            threads.add(threading.current_thread().name)
        return n

    @app.task
    def free(n: int) -> int:
        with lock:
            starts["free"].append(clock.monotonic())
        return n

    # Four threads, and a window for all eight messages: tasks held for a token count in the
    # prefetch window, so a small one would hold the other task back too.
    worker = start_worker(app, pool=pool, concurrency=4, prefetch_multiplier=8, clock=clock)
    sent_at = clock.monotonic()
    slow = [limited.delay(n) for n in range(4)]
    fast = [free.delay(n) for n in range(4)]

    # The clock stands still: the other task runs at once, the limited one takes its one
    # token and holds the three others for theirs.
    assert [r.get(timeout=WAIT) for r in fast] == list(range(4))
    assert max(starts["free"]) == sent_at
    wait_until(lambda: len(worker.consumer.held_jobs()) == 3, what="three runs held")
    assert len(starts["limited"]) == 1

    with autojump(clock, worker):
        assert [r.get(timeout=WAIT) for r in slow] == list(range(4))

    # 5/s: one token now, then one every 0.2 s, so the four starts span 0.6 s, none early.
    offsets = [start - sent_at for start in sorted(starts["limited"])]
    assert all(offset >= 0.2 * n - 1e-6 for n, offset in enumerate(offsets))
    assert offsets[-1] == pytest.approx(0.6)
    if pool == "solo":
        # Held tasks run in the worker's own thread, like every solo task (not in a timer).
        assert threads == {"test-worker"}
