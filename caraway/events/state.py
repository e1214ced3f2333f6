"""``State``: the cluster as events tell it, kept in memory (for ``caraway events`` and
dashboards). Workers are alive while their heartbeats keep coming (within twice their
``freq``, Celery's expire window); tasks carry the state of the latest event about them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from caraway import states

#: Celery's HEARTBEAT_EXPIRE_WINDOW: a worker is offline after 200% of its beat period.
EXPIRE_WINDOW = 2.0


def heartbeat_expires(timestamp: float, freq: float = 60.0, expire_window: float = 200.0) -> float:
    """When a worker whose last heartbeat came at ``timestamp`` counts as offline: after
    ``expire_window`` percent of its period ``freq`` (Celery's helper, same arguments)."""
    return timestamp + freq * expire_window / 100


#: Heartbeats kept per worker.
HEARTBEATS_KEPT = 4
#: The task state each task event leads to.
TASK_STATES = {
    "task-sent": states.PENDING,
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-retried": states.RETRY,
    "task-revoked": states.REVOKED,
    "task-rejected": states.REJECTED,
}
#: Fields copied from task events onto the task (when present).
TASK_FIELDS = (
    "name", "args", "kwargs", "eta", "expires", "retries", "root_id", "parent_id", "result",
    "exception", "traceback", "runtime", "queue", "exchange", "routing_key", "terminated",
    "signum", "expired",
)  # fmt: skip
WORKER_FIELDS = ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys", "pid")


@dataclass
class Worker:
    hostname: str
    pid: int | None = None
    freq: float = 2.0
    active: int | None = None
    processed: int | None = None
    loadavg: list[float] | None = None
    sw_ident: str | None = None
    sw_ver: str | None = None
    sw_sys: str | None = None
    heartbeats: list[float] = field(default_factory=list)
    clock: int = 0
    offline_at: float | None = None

    @property
    def heartbeat_expires(self) -> float | None:
        if not self.heartbeats:
            return None
        return self.heartbeats[-1] + self.freq * EXPIRE_WINDOW

    def is_alive(self, now: float | None = None) -> bool:
        expires = self.heartbeat_expires
        return expires is not None and (time.time() if now is None else now) < expires

    @property
    def alive(self) -> bool:
        return self.is_alive()

    def on_event(self, event: dict[str, Any]) -> None:
        for name in WORKER_FIELDS:
            if name in event:
                setattr(self, name, event[name])
        self.clock = max(self.clock, int(event.get("clock") or 0))
        if event["type"] == "worker-offline":
            self.heartbeats.clear()
            self.offline_at = float(event.get("timestamp") or time.time())
            return
        # Timestamps come from the worker's clock; the receipt time keeps a worker whose
        # clock is skewed from looking dead (or alive) for ever.
        self.heartbeats.append(time.time())
        del self.heartbeats[:-HEARTBEATS_KEPT]
        self.offline_at = None


@dataclass
class Task:
    uuid: str
    state: str = states.PENDING
    name: str | None = None
    hostname: str | None = None
    args: str | None = None
    kwargs: str | None = None
    eta: Any = None
    expires: Any = None
    retries: int | None = None
    root_id: str | None = None
    parent_id: str | None = None
    result: Any = None
    exception: str | None = None
    traceback: str | None = None
    runtime: float | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    terminated: bool | None = None
    signum: Any = None
    expired: bool | None = None
    timestamp: float | None = None
    #: When each event type was seen (the event's own timestamp), e.g. {"task-started": t}.
    timeline: dict[str, float] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        stamp = float(event.get("timestamp") or time.time())
        self.timeline[kind] = stamp
        for name in TASK_FIELDS:
            if event.get(name) is not None:
                setattr(self, name, event[name])
        if kind != "task-sent" and event.get("hostname"):
            self.hostname = event["hostname"]
        new_state = TASK_STATES.get(kind, self.state)
        # Events may arrive out of order (two workers, batches): a finished task stays
        # finished when an older event about it shows up late.
        if not (self.ready and new_state not in states.READY_STATES and
                stamp <= (self.timestamp or 0.0)):  # fmt: skip
            self.state = new_state
            self.timestamp = max(stamp, self.timestamp or 0.0)


class State:
    """Workers and tasks seen in events; thread-safe, bounded to ``max_tasks_in_memory``."""

    def __init__(
        self,
        max_tasks_in_memory: int = 10_000,
        max_workers_in_memory: int = 5_000,
        callback: Callable[[State, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.max_tasks_in_memory = max_tasks_in_memory
        self.max_workers_in_memory = max_workers_in_memory
        self.callback = callback
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.event_count = 0
        self.task_count = 0
        self._lock = threading.RLock()

    def event(self, event: dict[str, Any]) -> None:
        """Apply one event (any type; unknown ones are only counted)."""
        with self._lock:
            self.event_count += 1
            kind = str(event.get("type") or "")
            hostname = event.get("hostname")
            if kind.startswith("worker-") and hostname:
                self.get_or_create_worker(hostname).on_event(event)
            elif kind.startswith("task-") and event.get("uuid"):
                task = self.tasks.get(event["uuid"])
                if task is None:
                    task = self.tasks[event["uuid"]] = Task(event["uuid"])
                    self.task_count += 1
                    while len(self.tasks) > self.max_tasks_in_memory:
                        self.tasks.popitem(last=False)
                task.on_event(event)
                if hostname and kind != "task-sent":
                    worker = self.get_or_create_worker(hostname)
                    worker.clock = max(worker.clock, int(event.get("clock") or 0))
        if self.callback is not None:
            self.callback(self, event)

    def get_or_create_worker(self, hostname: str) -> Worker:
        with self._lock:
            worker = self.workers.get(hostname)
            if worker is None:
                worker = self.workers[hostname] = Worker(hostname)
                while len(self.workers) > self.max_workers_in_memory:
                    self.workers.popitem(last=False)
            return worker

    def alive_workers(self) -> list[Worker]:
        with self._lock:
            return [worker for worker in self.workers.values() if worker.alive]

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        """The newest tasks first."""
        with self._lock:
            items = list(reversed(self.tasks.items()))
        yield from items[:limit] if limit is not None else items

    def tasks_by_type(self, name: str) -> list[Task]:
        return [task for _, task in self.itertasks() if task.name == name]

    def tasks_by_worker(self, hostname: str) -> list[Task]:
        return [task for _, task in self.itertasks() if task.hostname == hostname]

    def tasks_by_state(self, state: str) -> list[Task]:
        return [task for _, task in self.itertasks() if task.state == state]

    def clear(self) -> None:
        with self._lock:
            self.workers.clear()
            self.tasks.clear()
            self.event_count = self.task_count = 0
