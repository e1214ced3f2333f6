"""``EventsCollector``: the cluster's metrics as task and worker events tell them, for a
dashboard (or ``caraway events``) that keeps an events ``State``.

Counts and histograms grow with each event (``observe``), so they stay right when the State
forgets old tasks; gauges (workers online, active and reserved tasks, queue depths) are read
from the State and the broker when ``/metrics`` is scraped. Times come from the events'
timestamps: the sender's and the workers' clocks, which should agree (NTP).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric

from caraway import states
from caraway.events.state import TASK_STATES, State, Task
from caraway.metrics.depths import queue_depths
from caraway.metrics.families import queue_depth_family, task_families, worker_gauge
from caraway.metrics.tally import TaskTally

if TYPE_CHECKING:
    from caraway.app import Caraway

#: The events that end a run, whose runtime the histogram takes.
RUN_ENDS = frozenset({"task-succeeded", "task-failed", "task-retried"})
#: What the label says for a task whose name no event told (the State forgot it).
UNKNOWN = "unknown"


class EventsCollector:
    """A ``prometheus_client`` collector fed by ``observe(state, event)``.

    ``app`` (optional) adds the depths of ``queues`` (default: the app's default queue).
    """

    def __init__(
        self, state: State, app: Caraway | None = None, queues: Iterable[str] = ()
    ) -> None:
        self.state = state
        self.app = app
        self.queues = list(queues)
        self.tally = TaskTally()

    def observe(self, state: State, event: dict[str, Any]) -> None:
        """Count one event, after ``state`` applied it (``State``'s callback signature)."""
        kind = str(event.get("type") or "")
        task = state.tasks.get(event.get("uuid") or "")
        if kind not in TASK_STATES or task is None:
            return
        worker, name = str(event.get("hostname") or ""), task.name or UNKNOWN
        stamp = float(event.get("timestamp") or time.time())
        if kind == "task-started":
            self.tally.waited(worker, name, stamp - _ready_at(task, stamp))
        elif kind in RUN_ENDS and (runtime := _runtime(task, event, stamp)) is not None:
            self.tally.ran(worker, name, TASK_STATES[kind], runtime)
        else:
            self.tally.reached(worker, name, TASK_STATES[kind])

    def collect(self) -> Iterator[Metric]:
        yield from task_families(self.tally.snapshot())
        now = time.time()
        workers = list(self.state.workers.values())
        yield worker_gauge(
            "worker_online", "1 while the worker's heartbeats keep coming, else 0.",
            {w.hostname: 1.0 if w.is_alive(now) else 0.0 for w in workers},
        )  # fmt: skip
        yield worker_gauge(
            "worker_active_tasks", "Tasks running now (from the last heartbeat).",
            {w.hostname: w.active for w in workers if w.active is not None},
        )  # fmt: skip
        reserved = Counter(
            task.hostname for _, task in self.state.itertasks()
            if task.state == states.RECEIVED and task.hostname
        )  # fmt: skip
        yield worker_gauge(
            "worker_reserved_tasks", "Tasks received by the worker and not started yet.",
            {w.hostname: reserved.get(w.hostname, 0) for w in workers},
        )  # fmt: skip
        if self.app is not None:
            queues = self.queues or [self.app.conf.task_default_queue]
            yield queue_depth_family(queue_depths(self.app.broker, queues))


def events_collector(
    state: State, app: Caraway | None = None, queues: Iterable[str] = ()
) -> EventsCollector:
    """A collector that ``state`` feeds: it takes ``state.callback``, calling the callback set
    before it after each event (set a callback of your own before, not after, this call)."""
    collector = EventsCollector(state, app, queues)
    state.callback = _chain(collector.observe, state.callback)
    return collector


def _chain(
    first: Callable[[State, dict[str, Any]], Any],
    then: Callable[[State, dict[str, Any]], Any] | None,
) -> Callable[[State, dict[str, Any]], Any]:
    if then is None:
        return first

    def both(state: State, event: dict[str, Any]) -> None:
        first(state, event)
        then(state, event)

    return both


def _ready_at(task: Task, started: float) -> float:
    """When the task could run: its send (or receipt) event, or its ETA if later."""
    timeline = task.timeline
    ready = timeline.get("task-sent", timeline.get("task-received", started))
    eta = _timestamp(task.eta)
    return max(ready, eta) if eta is not None else ready


def _runtime(task: Task, event: dict[str, Any], ended: float) -> float | None:
    """The event's own ``runtime`` (task-succeeded), else from the started event."""
    if event.get("runtime") is not None:
        return float(event["runtime"])
    started = task.timeline.get("task-started")
    return ended - started if started is not None else None


def _timestamp(value: Any) -> float | None:
    """An event's ETA (ISO 8601 text, or a number) in seconds; None when absent or unreadable."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None
