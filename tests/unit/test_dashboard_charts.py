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

    found = figures(store, 3600.0, now=now)
    buckets, table = found.buckets, found.table

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
    assert (found.name, found.series) == ("", [])


def test_one_task_names_finished_tasks_per_bucket(tmp_path: Path) -> None:
    store = Store(tmp_path / "dash.sqlite3", Limits(max_age=float("inf")))
    now = 10_000.0
    events = []
    for i, (name, kind, ago) in enumerate([
        ("proj.a", "task-succeeded", 30), ("proj.a", "task-succeeded", 40),
        ("proj.a", "task-failed", 50), ("proj.a", "task-succeeded", 1790),
        ("proj.b", "task-succeeded", 30), ("proj.b", "task-failed", 1790),
        ("proj.a", "task-succeeded", 5000),  # before the window
    ]):  # fmt: skip
        events += [
            {"type": "task-received", "uuid": f"t{i}", "timestamp": now - ago - 5, "name": name},
            {"type": kind, "uuid": f"t{i}", "timestamp": now - ago, "runtime": 0.1},
        ]
    store.add_task_events(events)

    found = figures(store, 3600.0, now=now, name="proj.a")

    assert found.name == "proj.a"
    assert len(found.series) == BUCKETS
    assert [(b.succeeded, b.failed) for b in found.series if b.succeeded or b.failed] == [
        (1, 0), (2, 1)]  # half an hour ago, and in the last minute  # fmt: skip
    assert (found.series[30].succeeded, found.series[-1].succeeded) == (1, 2)
    last = found.series[-1]
    assert last.ok_height + last.failed_height == pytest.approx(BAR_HEIGHT)
    # scaled to its own busiest slot
    assert found.series[30].ok_height == pytest.approx(BAR_HEIGHT / 3)
    assert [(b.succeeded, b.failed) for b in found.buckets if b.succeeded or b.failed] == [
        (1, 1), (3, 1)]  # every name together  # fmt: skip
    assert found.series[-1].start == found.buckets[-1].start
    nothing = figures(store, 3600.0, now=now, name="proj.none")
    assert sum(b.succeeded + b.failed for b in nothing.series) == 0
