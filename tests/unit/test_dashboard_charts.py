"""The Charts page's figures: tasks finished per time bucket and per name, runtime percentiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from caraway.dashboard.charts import BAR_HEIGHT, BUCKETS, figures
from caraway.dashboard.store import Limits, Store


def test_finished_tasks_are_counted_per_bucket_and_per_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "dash.sqlite3", Limits(max_age=float("inf")))
    now = 10_000.0
    events = []
    for i in range(10):  # proj.fast: 10 successes in the last minute, runtimes 0.1 .. 1.0
        events += [
            {"type": "task-received", "uuid": f"f{i}", "timestamp": now - 50, "name": "proj.fast"},
            {"type": "task-succeeded", "uuid": f"f{i}", "timestamp": now - 30,
             "runtime": (i + 1) / 10},
        ]  # fmt: skip
    events += [
        {"type": "task-received", "uuid": "s1", "timestamp": now - 3000, "name": "proj.slow"},
        {"type": "task-failed", "uuid": "s1", "timestamp": now - 1790},  # half an hour ago
        {"type": "task-received", "uuid": "old", "timestamp": now - 9000, "name": "proj.old"},
        {"type": "task-succeeded", "uuid": "old", "timestamp": now - 8000},  # before the window
        {"type": "task-received", "uuid": "run", "timestamp": now - 10, "name": "proj.fast"},
    ]  # fmt: skip
    store.add_task_events(events)

    buckets, table = figures(store, 3600.0, now=now)

    assert len(buckets) == BUCKETS
    assert (buckets[-1].succeeded, buckets[-1].failed) == (10, 0)
    assert buckets[-1].ok_height == BAR_HEIGHT
    assert (buckets[30].succeeded, buckets[30].failed) == (0, 1)
    assert sum(b.succeeded + b.failed for b in buckets) == 11
    by_name = {row.name: row for row in table}
    assert set(by_name) == {"proj.fast", "proj.slow"}
    fast = by_name["proj.fast"]
    assert (fast.succeeded, fast.failed) == (10, 0)
    assert fast.per_minute == pytest.approx(10 / 60)
    assert fast.p50 == pytest.approx(0.55)
    assert fast.p99 == pytest.approx(0.991)
    assert (by_name["proj.slow"].failed, by_name["proj.slow"].p50) == (1, None)
