"""The Charts page's figures: throughput and failures over a time window, per task name,
with runtime percentiles, from the dashboard's history (counted by SQLite)."""

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


def _percentiles(runtimes: list[float]) -> tuple[float | None, float | None, float | None]:
    if len(runtimes) < 2:
        only = runtimes[0] if runtimes else None
        return only, only, only
    cuts = statistics.quantiles(runtimes, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def figures(store: Store, window: float, now: float | None = None
            ) -> tuple[list[Bucket], list[TaskFigures]]:  # fmt: skip
    """Finished tasks of the last ``window`` seconds: per time bucket, and per task name."""
    now = time.time() if now is None else now
    since = now - window
    counts = [[0, 0] for _ in range(BUCKETS)]
    totals: dict[str, list[int]] = {}
    for name, state, slot, count in store.finished_counts(since, window / BUCKETS):
        failed = state == "FAILURE"
        counts[min(max(slot, 0), BUCKETS - 1)][failed] += count
        totals.setdefault(name, [0, 0])[failed] += count
    runtimes: dict[str, list[float]] = {}
    for name, runtime in store.runtimes(since, PERCENTILE_SAMPLE):
        runtimes.setdefault(name, []).append(runtime)
    busiest = max((ok + bad for ok, bad in counts), default=0) or 1
    buckets = [
        Bucket(since + i * window / BUCKETS, ok, bad, ok / busiest * BAR_HEIGHT,
               bad / busiest * BAR_HEIGHT)
        for i, (ok, bad) in enumerate(counts)
    ]  # fmt: skip
    table = [
        TaskFigures(name, ok, bad, (ok + bad) / (window / 60),
                    *_percentiles(sorted(runtimes.get(name, []))))
        for name, (ok, bad) in sorted(totals.items())
    ]  # fmt: skip
    return buckets, table
