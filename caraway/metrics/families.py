"""The metric families both collectors expose (names, types, labels: docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from caraway.metrics.tally import Histogram, TallySnapshot, TaskKey

#: Every family's name starts so; ``caraway_tasks`` + the counter suffix ``_total``.
PREFIX = "caraway_"


def task_families(snapshot: TallySnapshot) -> Iterator[Metric]:
    """Counters of states reached and the runtime and queue-wait histograms."""
    tasks = CounterMetricFamily(
        f"{PREFIX}tasks", "Tasks that reached a state (RECEIVED, STARTED, SUCCESS, FAILURE, "
        "RETRY, REVOKED...), by worker and task name.", labels=["worker", "task", "state"],
    )  # fmt: skip
    for (worker, task, state), count in sorted(snapshot.states.items()):
        tasks.add_metric([worker, task, state], count)
    yield tasks
    yield _histogram(
        f"{PREFIX}task_runtime_seconds", "How long runs took, whatever their outcome.",
        snapshot.runtimes,
    )  # fmt: skip
    yield _histogram(
        f"{PREFIX}task_queue_wait_seconds",
        "From when a task could run (sent or received, or its ETA if later) to its start.",
        snapshot.waits,
    )


def _histogram(name: str, doc: str, histograms: Mapping[TaskKey, Histogram]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=["worker", "task"])
    for (worker, task), histogram in sorted(histograms.items()):
        family.add_metric([worker, task], histogram.cumulative(), histogram.total)
    return family


def dead_letter_family(counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(
        f"{PREFIX}dead_letters", "Messages a worker set aside as dead letters.", labels=["worker"]
    )
    for worker, count in sorted(counts.items()):
        family.add_metric([worker], count)
    return family


def worker_gauge(name: str, doc: str, values: Mapping[str, float]) -> Metric:
    """A gauge with one sample per worker hostname."""
    family = GaugeMetricFamily(f"{PREFIX}{name}", doc, labels=["worker"])
    for worker, value in sorted(values.items()):
        family.add_metric([worker], value)
    return family


def queue_depth_family(depths: Iterable[tuple[str, int]]) -> Metric:
    family = GaugeMetricFamily(
        f"{PREFIX}queue_depth", "Messages waiting in a queue (read from the broker at scrape).",
        labels=["queue"],
    )  # fmt: skip
    for queue, depth in depths:
        family.add_metric([queue], depth)
    return family
