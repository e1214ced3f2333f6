"""``TaskTally``: task counts and time histograms, kept as plain dictionaries.

Both sources of metrics feed one: a worker from its consumer (per task, a few dictionary
updates under one lock, cheaper than a ``prometheus_client`` child per label set), a
dashboard from the events it receives. The Prometheus families are built from it only when
``/metrics`` is scraped (``caraway.metrics.families``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field

#: Upper bounds of the runtime buckets, in seconds: from a 5 ms task to a 10 min batch job.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0)  # fmt: skip
#: Upper bounds of the queue-wait buckets: a healthy queue waits milliseconds, a backlog hours.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                      900.0, 3600.0)  # fmt: skip

#: (worker, task name): the labels of the per-task histograms.
TaskKey = tuple[str, str]


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum of observations."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        running, pairs = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


class TaskTally:
    """Thread-safe: pool threads finish tasks while the HTTP thread reads a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: (worker, task name, state) -> how many times a task reached that state.
        self._states: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._runtimes: dict[TaskKey, Histogram] = {}
        self._waits: dict[TaskKey, Histogram] = {}
        #: worker -> messages it set aside as dead letters.
        self._dead_letters: defaultdict[str, int] = defaultdict(int)

    def reached(self, worker: str, task: str, state: str) -> None:
        with self._lock:
            self._states[worker, task, state] += 1

    def ran(self, worker: str, task: str, state: str, seconds: float) -> None:
        """A run ended in ``state`` after ``seconds``."""
        with self._lock:
            self._states[worker, task, state] += 1
            histogram = self._runtimes.get((worker, task))
            if histogram is None:
                histogram = self._runtimes[worker, task] = Histogram(RUNTIME_BUCKETS)
            histogram.observe(seconds)

    def waited(self, worker: str, task: str, seconds: float) -> None:
        """A task started ``seconds`` after it was ready to run (it counts as STARTED)."""
        with self._lock:
            self._states[worker, task, "STARTED"] += 1
            histogram = self._waits.get((worker, task))
            if histogram is None:
                histogram = self._waits[worker, task] = Histogram(QUEUE_WAIT_BUCKETS)
            histogram.observe(max(seconds, 0.0))

    def dead_lettered(self, worker: str) -> None:
        with self._lock:
            self._dead_letters[worker] += 1

    def snapshot(self) -> TallySnapshot:
        """A copy to build the families from, outside the lock."""
        with self._lock:
            return TallySnapshot(
                dict(self._states),
                {key: _copy(h) for key, h in self._runtimes.items()},
                {key: _copy(h) for key, h in self._waits.items()},
                dict(self._dead_letters),
            )


@dataclass(frozen=True)
class TallySnapshot:
    states: dict[tuple[str, str, str], int]
    runtimes: dict[TaskKey, Histogram]
    waits: dict[TaskKey, Histogram]
    dead_letters: dict[str, int]


def _copy(histogram: Histogram) -> Histogram:
    copy = Histogram(histogram.bounds)
    copy.counts, copy.total = list(histogram.counts), histogram.total
    return copy
