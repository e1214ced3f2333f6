"""The ingest thread: events from the cluster into the store, in batches.

Task events are buffered and written together (a batch per ``FLUSH_SECONDS`` or per
``BATCH`` events, whichever comes first); worker events update an in-memory ``State`` (alive
is a heartbeat question, answered in memory) and are saved to the store when a worker's
status changes or every ``WORKER_SAVE_SECONDS``, so a restarted dashboard still lists them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from caraway.events import EventReceiver, State
from caraway.exceptions import OperationalError

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.dashboard.store import Store
    from caraway.events.state import Worker

logger = logging.getLogger("caraway.dashboard")

#: A page refresh every second shows events at most this late.
FLUSH_SECONDS = 0.25
BATCH = 2_000
WORKER_SAVE_SECONDS = 5.0
#: Pause before listening again after the broker went away.
RETRY_SECONDS = 2.0


def worker_info(worker: Worker) -> dict[str, Any]:
    info = asdict(worker)
    info.pop("heartbeats", None)
    return info


class Ingestor:
    """Runs an ``EventReceiver`` in a daemon thread until ``stop``."""

    def __init__(self, app: Caraway, store: Store) -> None:
        self.app = app
        self.store = store
        self.state = State(max_tasks_in_memory=1)  # tasks live in the store
        #: Called with every event after it is taken (the Prometheus collector's State).
        self.observers: list[Callable[[dict[str, Any]], Any]] = []
        self.events_seen = 0
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._saved: dict[str, tuple[bool, float]] = {}
        self._receiver: EventReceiver | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-ingest", daemon=True)
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout)

    def _run(self) -> None:
        self.store.prune()  # a history kept across a restart may be past the limits now
        while not self._stopping.is_set():
            try:
                with EventReceiver(self.app) as receiver:
                    self._receiver = receiver
                    receiver.should_stop = self._stopping.is_set()
                    self._listen(receiver)
                self.flush()
            except OperationalError as exc:
                logger.warning("Events unavailable (%s); listening again in %ss", exc,
                               RETRY_SECONDS)  # fmt: skip
                self._stopping.wait(RETRY_SECONDS)
            except Exception:  # the thread must outlive one bad batch: the page would freeze
                logger.exception("The dashboard's ingest failed; listening again")
                self._stopping.wait(RETRY_SECONDS)

    def _listen(self, receiver: EventReceiver) -> None:
        """Read in slices of ``FLUSH_SECONDS``, so a quiet spell still flushes the last events."""
        wakeup = True
        while not self._stopping.is_set():
            for event in receiver.itercapture(timeout=FLUSH_SECONDS, wakeup=wakeup):
                self.handle(event)
                if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                    self.flush()
            wakeup = False
            self.flush()

    def handle(self, event: dict[str, Any]) -> None:
        """Take one event; task events wait for the next flush."""
        self.events_seen += 1
        for observe in self.observers:
            observe(event)
        kind = str(event.get("type") or "")
        if kind.startswith("task-") and event.get("uuid"):
            self._pending.append(event)
            if len(self._pending) >= BATCH:
                self.flush()
        elif kind.startswith("worker-") and event.get("hostname"):
            self.state.event(event)
            self._save_worker(self.state.workers[event["hostname"]])

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if pending:
            self.store.add_task_events(pending)

    def _save_worker(self, worker: Worker) -> None:
        alive = worker.alive
        was = self._saved.get(worker.hostname)
        now = time.monotonic()
        if was is not None and was[0] == alive and now - was[1] < WORKER_SAVE_SECONDS:
            return
        self._saved[worker.hostname] = (alive, now)
        heartbeat = worker.heartbeats[-1] if worker.heartbeats else None
        self.store.save_worker(worker.hostname, worker_info(worker), heartbeat, worker.offline_at)
