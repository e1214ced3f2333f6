"""``WorkerMetrics``: what one worker knows about its tasks, served on its health port.

The consumer calls ``received``, ``started``, ``finished``, ``revoked`` and ``dead_lettered``
(in the worker process, whatever the pool); each is a clock read and a few dictionary updates
(``TaskTally``). The gauges (online, active, reserved, prefetch limit, queue depths) are read
from the worker and its broker only when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric

from caraway import states
from caraway.metrics.depths import queue_depths
from caraway.metrics.exposition import CONTENT_TYPE, render_latest
from caraway.metrics.families import (
    dead_letter_family,
    queue_depth_family,
    task_families,
    worker_gauge,
)
from caraway.metrics.tally import TaskTally

if TYPE_CHECKING:
    from caraway.execution import Outcome
    from caraway.worker.job import Job
    from caraway.worker.worker import Worker


class WorkerMetrics:
    """The consumer's hooks and a ``prometheus_client`` collector in one."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.hostname = worker.hostname
        self.tally = TaskTally()
        #: task id -> ``time.perf_counter()`` at its start, for the runtime.
        self._started: dict[str, float] = {}
        self._registry = CollectorRegistry()
        self._registry.register(self)

    def render(self) -> tuple[str, bytes]:
        """The ``/metrics`` answer: this worker's metrics, then the process' own
        (``prometheus_client``'s default registry: process and Python runtime metrics)."""
        return CONTENT_TYPE, render_latest(self._registry) + render_latest(REGISTRY)

    # --- hooks (the consumer calls these) -----------------------------------------------------

    def received(self, job: Job) -> None:
        self.tally.reached(self.hostname, job.name, states.RECEIVED)

    def started(self, job: Job) -> None:
        now = time.time()
        ready = job.received_at
        eta = job.eta
        if eta is not None and eta > ready:  # waiting for its ETA is not waiting in a queue
            ready = eta
        self._started[job.id] = time.perf_counter()
        self.tally.waited(self.hostname, job.name, now - ready)

    def finished(self, job: Job, outcome: Outcome) -> None:
        began = self._started.pop(job.id, None)
        if began is not None:
            self.tally.ran(self.hostname, job.name, outcome.state, time.perf_counter() - began)

    def revoked(self, job: Job) -> None:
        self.tally.reached(self.hostname, job.name, states.REVOKED)

    def dead_lettered(self) -> None:
        self.tally.dead_lettered(self.hostname)

    # --- the collector (the health server's thread calls this at scrape) ----------------------

    def collect(self) -> Iterator[Metric]:
        snapshot = self.tally.snapshot()
        yield from task_families(snapshot)
        yield dead_letter_family({self.hostname: 0, **snapshot.dead_letters})
        worker, host = self.worker, self.hostname
        consumer = worker.consumer
        active = len(worker.state.active)
        reserved = consumer.reserved_count if consumer is not None else 0
        window = consumer.window if consumer is not None else worker.prefetch
        yield worker_gauge(
            "worker_online", "1 while the worker consumes (its /readyz), else 0.",
            {host: 1.0 if worker.serving() else 0.0},
        )  # fmt: skip
        yield worker_gauge("worker_active_tasks", "Tasks running now.", {host: active})
        yield worker_gauge(
            "worker_reserved_tasks", "Tasks prefetched by the worker and not started yet.",
            {host: max(reserved, 0)},
        )  # fmt: skip
        yield worker_gauge(
            "worker_prefetch_limit", "Most messages the worker reserves at once.", {host: window}
        )
        yield queue_depth_family(queue_depths(worker.app.broker, worker.queues))
