"""``-P prefork`` on a broker that lets children fetch: the supervisor only watches.

Each child consumes for itself (``fetching``); the supervisor keeps one thread that reads
every child's batched reports through a selector. From them it keeps what ``inspect``,
events and the warm shutdown read (active and reserved jobs, processed counts), enforces the
hard time limit (SIGKILL of the child running the task it heard started), and when a child
dies settles the task it ran (``WorkerLostError``, a time limit, a terminate, a cold
shutdown: as the hand-off pool does) and gives back the messages it had fetched and not
settled, then starts another child. Revocations are passed on to every child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NoReturn

from caraway import signals
from caraway.exceptions import TimeLimitExceeded
from caraway.execution import Outcome
from caraway.utils.einfo import ExceptionInfo
from caraway.utils.log import expand_node_path
from caraway.worker import request as hooks
from caraway.worker.pools import lost
from caraway.worker.pools.base import Pool, PoolOptions, Work
from caraway.worker.pools.channel import Channel
from caraway.worker.pools.child import ChildLimits
from caraway.worker.pools.forker import Forker, exit_status

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.worker.consumer import Consumer
    from caraway.worker.job import Job

logger = logging.getLogger("caraway.worker")

#: Longest the watcher waits with nothing to read, so it notices a stop (s).
WATCH_TICK = 0.2
#: How long the watcher lets reports gather once it read some (s): children write them at
#: once (a task's start must be in the pipe before the task runs), the watcher reads them
#: a few milliseconds later, many at a time. Hard time limits are counted from the child's
#: own clock reading, so they are not delayed by this.
BATCH_WAIT = 0.005


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What a fetching child consumes: its queues, its share of the prefetch window."""

    queues: tuple[str, ...]
    window: int
    hostname: str


class Reported:
    """A message a child fetched, decoded here only when someone looks at it: it stands in
    for its ``Job`` in ``state.active`` and ``inspect``."""

    __slots__ = ("_job", "_pool", "carried", "hold", "tag", "task_id")

    def __init__(self, pool: WatchingPool, tag: Any, carried: Any) -> None:
        self._pool = pool
        self.tag = tag
        self.carried = carried
        self.task_id: str | None = None
        #: (when, "eta" or "rate") while the child holds it for its ETA or a token.
        self.hold: tuple[float, str] | None = None
        self._job: Job | None = None

    @property
    def job(self) -> Job | None:
        if self._job is None:
            self._job = self._pool.decode(self.carried)
        return self._job

    @property
    def id(self) -> str:
        if self.task_id is not None:
            return self.task_id
        job = self.job
        return job.id if job is not None else str(self.tag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


@dataclass(slots=True)
class Watched:
    """The supervisor's handle on one fetching child."""

    slot: int
    pid: int
    conn: Channel
    status_fd: int
    #: Messages it fetched and has not settled, by tag, in fetch order.
    held: dict[Any, Reported] = field(default_factory=dict)
    running: Reported | None = None
    hard_at: float | None = None
    receipt: Any = None
    killed_at_limit: bool = False
    terminated_with: int | None = None
    retiring: bool = False
    said_bye: bool = False
    #: Asked to leave by a shrink: not replaced when it exits.
    leaving: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Tags settled since its last reported fetch: not given back from its receipt.
    since_fetch: set[Any] = field(default_factory=set)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


class WatchingPool(Pool):
    """Children fetch and run; this process watches them."""

    fetches_itself = True

    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        if self.options.app is None:
            raise ValueError("the prefork pool needs the app its children run tasks for")
        self.app: Caraway = self.options.app
        self.limits = ChildLimits(
            self.options.max_tasks_per_child, self.options.max_memory_per_child
        )
        self._share = max(1, self.options.prefetch // self.limit)
        self._forker = Forker(self._start_child)
        self._children: dict[int, Watched] = {}  # by the fd of its pipe
        #: Control changes so far, replayed to each child that starts later.
        self._changes: dict[Any, tuple[Any, ...]] = {}
        self._selector = selectors.DefaultSelector()
        self._consumer: Consumer | None = None
        self._fetching = False
        self._cold = False
        self._stopped = threading.Event()
        #: Held while reports are read: by the watcher, or by a control command that must
        #: see what the children wrote up to now (``sync``).
        self._reading = threading.RLock()
        self._thread = threading.Thread(target=self._watch, name="caraway-watcher", daemon=True)

    @property
    def plan(self) -> FetchPlan:
        """Each child's share of the window: together, the worker's prefetch window (which
        grows and shrinks with the pool)."""
        return FetchPlan(self.options.queues, self._share, self.options.hostname)

    # --- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self._forker.start()
        for slot in range(self.limit):
            self._add(self._fork(slot))

    def begin(self, consumer: Consumer) -> None:
        """The worker is ready: children may fetch. Revocations reach them from now on."""
        self._consumer = consumer
        consumer.state.on_revoke = self._revoke
        consumer.state.on_revoke_stamps = self._revoke_stamps
        self._fetching = True
        for child in list(self._children.values()):
            self._go(child)
        self._thread.start()

    def stop_fetching(self) -> None:
        """Warm shutdown: children stop fetching, give back what they hold, finish, exit."""
        self._fetching = False
        for child in list(self._children.values()):
            self._tell(child, None)

    def submit(self, work: Work) -> None:
        raise RuntimeError("the children of this pool fetch their own work")

    def stop(self, wait: bool = True) -> None:
        self._fetching = False
        if not wait:
            self._cold = True
            for child in list(self._children.values()):
                child.signal(signal.SIGKILL)
        else:
            self.stop_fetching()
        if self._thread.is_alive():
            while self._children and self._thread.is_alive():
                self._thread.join(0.05)
        else:  # never began: no watcher reaps them
            for child in list(self._children.values()):
                self._reap(child)
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._forker.stop(wait)

    def processes(self) -> list[int]:
        return [child.pid for child in list(self._children.values())]

    def live_slots(self) -> int:
        return self.limit if self._fetching or not self._children else len(self._children)

    def reserved(self) -> list[Any]:
        """Messages the children fetched and have not started nor hold (``inspect reserved``)."""
        found = []
        for child in list(self._children.values()):
            found += [r for r in list(child.held.values()) if r is not child.running]
        return [r.job for r in found if r.hold is None and r.job is not None]

    def held(self) -> list[tuple[float, Any, str]]:
        """Jobs the children hold for their ETA or a rate-limit token: (when, job, kind)."""
        found = []
        for child in list(self._children.values()):
            for reported in list(child.held.values()):
                hold, job = reported.hold, reported.job
                if hold is not None and reported is not child.running and job is not None:
                    found.append((hold[0], job, hold[1]))
        return found

    def reconfigure(self, change: tuple[Any, ...]) -> None:
        key = change[:2] if change[0] == "task" else change[0]
        if change[0] == "task" and key in self._changes:
            change = ("task", change[1], {**self._changes[key][2], **change[2]})
        self._changes[key] = change
        for child in list(self._children.values()):
            self._tell(child, change)

    def grow(self, n: int) -> None:
        for _ in range(max(0, n)):
            slot = len(self._children)
            child = self._fork(slot)
            self._add(child)
            if self._fetching:
                self._go(child)
            self.limit += 1

    def shrink(self, n: int) -> None:
        """``n`` children (idle ones first) give back what they hold, finish and leave."""
        n = min(max(0, n), self.limit - 1)
        staying = [c for c in self._children.values() if not c.leaving]
        staying.sort(key=lambda child: child.running is not None)
        for child in staying[:n]:
            child.leaving = True
            self._tell(child, None)
        self.limit -= n

    def sync(self) -> None:
        """Read what the children reported so far, now, without waiting for the watcher."""
        if self._consumer is None:
            return
        with self._reading:
            for child in list(self._children.values()):
                if child.conn.poll(0):
                    self._read(child)

    def terminate(self, task_id: str, signum: int) -> bool:
        self.sync()  # the task may have started a moment ago
        for child in list(self._children.values()):
            if child.running is not None and child.running.task_id == task_id:
                child.terminated_with = signum
                child.signal(signum)
                return True
        return False

    def decode(self, carried: Any) -> Job | None:
        consumer = self._consumer
        if consumer is None or carried is None:
            return None
        return consumer.job_for(consumer.broker.from_portable(carried))

    # --- talking to children -----------------------------------------------------------------

    def _start_child(self, conn: Connection, index: int) -> NoReturn:
        """Runs in the fork server's new child."""
        template = self.options.logfile
        logfile = expand_node_path(template, self.options.hostname, index) if template else None
        # Lazy: the child's module is the consumer's, which imports the pools.
        from caraway.worker.pools.fetching import fetching_child_main

        fetching_child_main(self.app, conn, self.limits, self.plan, index, logfile)

    def _fork(self, slot: int) -> Watched:
        signals.worker_before_create_process.send(sender=self)
        pid, conn, status_fd = self._forker.fork(slot + 1)
        logger.info("Pool child %d started", pid)
        return Watched(slot, pid, Channel(conn), status_fd)

    def _add(self, child: Watched) -> None:
        self._children[child.conn.fileno()] = child
        self._selector.register(child.conn.fileno(), selectors.EVENT_READ, child)

    def _go(self, child: Watched) -> None:
        consumer = self._consumer
        assert consumer is not None
        state = consumer.state
        with state.lock:
            revoked = list(state.revoked.items())
            stamps = {name: list(values) for name, values in state.revoked_stamps.items()}
        self._tell(child, ("go", revoked, stamps, list(self._changes.values())))

    def _revoke(self, task_id: str, terminate: bool) -> None:
        for child in list(self._children.values()):
            self._tell(child, ("revoke", task_id, terminate))

    def _revoke_stamps(self, headers: dict[str, Any]) -> None:
        for child in list(self._children.values()):
            self._tell(child, ("revoke_stamps", headers))

    def _tell(self, child: Watched, message: Any) -> None:
        """Write to the child; several threads do (revocations, control, the watcher)."""
        with child.lock, contextlib.suppress(OSError):  # it died: the watcher sees that
            child.conn.send(message)

    # --- the watcher thread ------------------------------------------------------------------

    def _watch(self) -> None:
        while self._children and not self._stopped.is_set():
            ready = self._selector.select(self._wait())
            with self._reading:
                for key, _ in ready:
                    child: Watched = key.data
                    # A ``sync`` may have read it (or found it dead) meanwhile.
                    if self._children.get(key.fd) is child and child.conn.poll(0):
                        self._read(child)
            self._enforce_limits()
            if ready and self._fetching:
                # Busy children report steadily: read them in batches, not a wakeup each.
                time.sleep(min(BATCH_WAIT, self._wait()))

    def _wait(self) -> float:
        now = time.monotonic()
        deadlines = [c.hard_at for c in self._children.values() if c.hard_at is not None]
        return min([WATCH_TICK, *(max(0.0, d - now) for d in deadlines)])

    def _read(self, child: Watched) -> None:
        conn = child.conn
        try:
            while True:
                for event in conn.recv():
                    self._handle(child, event)
                if not conn.poll(0):
                    return
        except (EOFError, OSError):
            self._lost(child)

    def _handle(self, child: Watched, event: tuple[Any, ...]) -> None:
        consumer = self._consumer
        assert consumer is not None
        kind, *fields = event
        getattr(self, f"_on_{kind}")(consumer, child, *fields)

    # One method per report a child sends (``fetching.Reporter``).

    def _on_fetched(self, consumer: Consumer, child: Watched, fetched: list[Any]) -> None:
        monitor, metrics = consumer.monitor, consumer.metrics
        for tag, carried in fetched:
            reported = child.held[tag] = Reported(self, tag, carried)
            if monitor is not None and monitor.dispatcher.allows("task-received"):
                self._received(consumer, reported)
            if metrics is not None and reported.job is not None:
                metrics.received(reported.job)
        child.since_fetch.clear()

    def _on_done(self, consumer: Consumer, child: Watched, tag: Any) -> None:
        child.held.pop(tag, None)
        child.since_fetch.add(tag)

    def _on_token(self, consumer: Consumer, child: Watched, name: str) -> None:
        self._tell(child, ("token", consumer.rate_wait(name)))

    def _on_held(
        self, consumer: Consumer, child: Watched, tag: Any, when: float, kind: str
    ) -> None:
        reported = child.held.get(tag)
        if reported is not None:
            reported.hold = (when, kind)

    def _on_receipt(self, consumer: Consumer, child: Watched, receipt: Any) -> None:
        child.receipt = receipt

    def _on_bye(self, consumer: Consumer, child: Watched) -> None:
        child.said_bye = True

    def _on_revoked(self, consumer: Consumer, child: Watched, tag: Any, reason: str) -> None:
        reported = child.held.get(tag)
        job = reported.job if reported is not None else None
        if consumer.monitor is not None and job is not None:
            consumer.monitor.on_revoked(request=job.request, expired=reason == "expired")
        if consumer.metrics is not None and job is not None:
            consumer.metrics.revoked(job)

    def _received(self, consumer: Consumer, reported: Reported) -> None:
        job = reported.job
        if job is not None and consumer.monitor is not None:
            consumer.monitor.on_received(sender=consumer, request=job.request)

    def _on_start(
        self, consumer: Consumer, child: Watched, tag: Any, task_id: str, at: float,
        hard: float | None,
    ) -> None:  # fmt: skip
        reported = child.held.get(tag)
        if reported is None:
            reported = Reported(self, tag, None)
        reported.task_id = task_id
        reported.hold = None
        child.running = reported
        child.hard_at = at + hard if hard else None
        consumer.state.active[task_id] = reported
        if consumer.monitor is not None:
            consumer.monitor.started(reported)  # type: ignore[arg-type]
        if consumer.metrics is not None and reported.job is not None:
            consumer.metrics.started(reported.job)

    def _on_end(
        self, consumer: Consumer, child: Watched, task_id: str, name: str, state: str,
        result: Any, traceback: str | None, retiring: bool,
    ) -> None:  # fmt: skip
        reported = child.running
        child.running = None
        child.hard_at = None
        child.retiring = retiring
        consumer.state.active.pop(task_id, None)
        consumer.state.task_done(name)
        if reported is None or (consumer.monitor is None and consumer.metrics is None):
            return
        einfo = None
        if traceback is not None:
            einfo = ExceptionInfo.from_text(Exception(result), traceback)
        outcome = Outcome(state, _Shown(result), einfo)
        if consumer.monitor is not None:
            consumer.monitor.finished(reported, outcome)  # type: ignore[arg-type]
        if consumer.metrics is not None and reported.job is not None:
            consumer.metrics.finished(reported.job, outcome)

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for child in list(self._children.values()):
            running = child.running
            if child.hard_at is None or now < child.hard_at or child.killed_at_limit:
                continue
            job = running.job if running is not None else None
            what = job.describe() if job is not None else f"Task {running and running.task_id}"
            logger.error("%s exceeded its hard time limit: killing its child", what)
            child.killed_at_limit = True
            child.signal(signal.SIGKILL)
            if job is not None and job.hooks is not None:
                hooks.timed_out(job.hooks, False, float(job.time_limit or 0))

    def _reap(self, child: Watched) -> int:
        fd = child.conn.fileno()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        self._children.pop(fd, None)
        child.conn.close()
        return exit_status(child.status_fd, 10.0)

    def _lost(self, child: Watched) -> None:
        exitcode = self._reap(child)
        consumer = self._consumer
        assert consumer is not None
        running = child.running
        if running is not None:
            child.held.pop(running.tag, None)
            self._settle_lost(consumer, child, running, exitcode)
        self._give_back(consumer, child)
        if self._fetching and not self._cold and not child.leaving:
            why = "retired" if child.retiring else lost.exited(exitcode)
            logger.info("Pool child in slot %d %s; starting another", child.slot, why)
            replacement = self._fork(child.slot)
            self._add(replacement)
            self._go(replacement)

    def _settle_lost(
        self, consumer: Consumer, child: Watched, running: Reported, exitcode: int
    ) -> None:
        """The task the child ran when it died: ended as the hand-off pool ends it."""
        consumer.state.active.pop(running.task_id or "", None)
        job = running.job
        if job is None:
            logger.error("Task %s: its child %s", running.task_id, lost.exited(exitcode))
            return
        try:
            if self._cold:
                outcome = lost.stopped_cold(self.app, job)
            elif child.killed_at_limit:
                outcome = lost.failed(self.app, job, TimeLimitExceeded(job.time_limit))
            elif child.terminated_with is not None:
                outcome = lost.terminated(self.app, job, child.terminated_with)
            else:
                outcome = lost.worker_lost(self.app, job, exitcode)
            consumer.finish(job, outcome)
        except Exception:
            logger.exception("Could not settle %s after its child died", job.describe())

    def _give_back(self, consumer: Consumer, child: Watched) -> None:
        """What the dead child fetched and had not settled goes back to the queue now."""
        if child.said_bye:
            return  # it gave back what it held itself
        tags = list(child.held)
        if child.receipt is not None:
            with contextlib.suppress(Exception):  # the lease ends anyway
                receipt = consumer.broker.tags_in_receipt(child.receipt)
                tags += [t for t in receipt if t not in child.held and t not in child.since_fetch]
        if child.running is not None:
            tags = [tag for tag in tags if tag != child.running.tag]
        if not tags:
            return
        try:
            consumer.broker.release(tags)
            logger.warning(
                "Gave back %d message(s) the child %d had fetched and not run", len(tags),
                child.pid,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("Could not give back the messages of child %d: %s", child.pid, exc)


class _Shown(str):
    """A result or exception as the child showed it (its repr): shown as is in events."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)
