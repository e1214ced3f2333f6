"""``rate_limit`` spaces the starts of one task's runs, and only that task's."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, make_app


@pytest.mark.parametrize(("broker", "pool"), [("memory", "threads"), ("sqlite", "solo")])
def test_rate_limit_spaces_starts_per_task_name(
    broker: str, pool: str, tmp_path: Path, start_worker: Any
) -> None:
    app = make_app(broker, f"rate-{broker}", tmp_path / "b.sqlite3")
    starts: dict[str, list[float]] = {"limited": [], "free": []}
    threads: set[str] = set()
    lock = threading.Lock()

    @app.task(rate_limit="5/s")
    def limited(n: int) -> int:
        with lock:
            starts["limited"].append(time.monotonic())
            threads.add(threading.current_thread().name)
        return n

    @app.task
    def free(n: int) -> int:
        with lock:
            starts["free"].append(time.monotonic())
        return n

    # Four threads, and a window for all twelve messages: tasks held for a token count in the
    # prefetch window, so a small one would hold the other task back too.
    start_worker(app, pool=pool, concurrency=4, prefetch_multiplier=12)
    sent_at = time.monotonic()
    slow = [limited.delay(n) for n in range(6)]
    fast = [free.delay(n) for n in range(6)]

    assert [r.get(timeout=WAIT) for r in fast] == list(range(6))
    assert [r.get(timeout=WAIT) for r in slow] == list(range(6))

    # 5/s: one token now, then one every 0.2 s, so six starts span about 1 s.
    limited_starts = sorted(starts["limited"])
    assert limited_starts[-1] - limited_starts[0] >= 0.8
    assert limited_starts[-1] - sent_at < 3.0  # spaced, not starved by each other
    # The other task is not slowed down by its neighbour's rate.
    assert max(starts["free"]) - sent_at < 0.5
    if pool == "solo":
        # Held tasks run in the worker's own thread, like every solo task (not in a timer).
        assert threads == {"test-worker"}
