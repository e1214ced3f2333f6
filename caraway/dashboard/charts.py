"""The Charts page's figures: throughput and failures over a time window, in all and for
one task name, per task name with runtime percentiles, from the dashboard's history
(counted by SQLite)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caraway.dashboard.store import Store

#: Bars in the throughput chart, whatever the window.
BUCKETS = 60
#: Height of the tallest bar, in the SVG's units.
BAR_HEIGHT = 100.0
#: Runtime percentiles come from the newest successes, at most this many (a busy hour may
#: hold hundreds of thousands; this many give percentiles to well under a percent).
PERCENTILE_SAMPLE = 20_000


@dataclass(frozen=True)
class Bucket:
    start: float
    succeeded: int
    failed: int
    #: Bar heights (SVG units), scaled to the busiest bucket.
    ok_height: float
    failed_height: float


@dataclass(frozen=True)
class TaskFigures:
    name: str
    succeeded: int
    failed: int
    per_minute: float
    #: Runtime percentiles in seconds (None with fewer than two runs).
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Figures:
    #: Tasks finished per time slot, all names together.
    buckets: list[Bucket]
    table: list[TaskFigures]
    #: The task name chosen ("" for none), and its own time slots (empty without one).
    name: str
    series: list[Bucket]


def _percentiles(runtimes: list[float]) -> tuple[float | None, float | None, float | None]:
    if len(runtimes) < 2:
        only = runtimes[0] if runtimes else None
        return only, only, only
    cuts = statistics.quantiles(runtimes, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def _bars(counts: list[list[int]], since: float, window: float) -> list[Bucket]:
    """One bucket per slot, bar heights scaled to the busiest slot."""
    busiest = max((ok + bad for ok, bad in counts), default=0) or 1
    return [
        Bucket(since + i * window / BUCKETS, ok, bad, ok / busiest * BAR_HEIGHT,
               bad / busiest * BAR_HEIGHT)
        for i, (ok, bad) in enumerate(counts)
    ]  # fmt: skip


def figures(store: Store, window: float, now: float | None = None, name: str = "") -> Figures:
    """Finished tasks of the last ``window`` seconds: per time bucket, per task name, and per
    time bucket for ``name`` alone (from the same counts: no second query)."""
    now = time.time() if now is None else now
    since = now - window
    counts = [[0, 0] for _ in range(BUCKETS)]
    named = [[0, 0] for _ in range(BUCKETS)]
    totals: dict[str, list[int]] = {}
    for task_name, state, slot, count in store.finished_counts(since, window / BUCKETS):
        failed = state == "FAILURE"
        bucket = min(max(slot, 0), BUCKETS - 1)
        counts[bucket][failed] += count
        totals.setdefault(task_name, [0, 0])[failed] += count
        if task_name == name:
            named[bucket][failed] += count
    runtimes: dict[str, list[float]] = {}
    for task_name, runtime in store.runtimes(since, PERCENTILE_SAMPLE):
        runtimes.setdefault(task_name, []).append(runtime)
    table = [
        TaskFigures(task_name, ok, bad, (ok + bad) / (window / 60),
                    *_percentiles(sorted(runtimes.get(task_name, []))))
        for task_name, (ok, bad) in sorted(totals.items())
    ]  # fmt: skip
    series = _bars(named, since, window) if name else []
    return Figures(_bars(counts, since, window), table, name, series)
