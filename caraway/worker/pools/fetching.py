"""A prefork child that fetches for itself: a solo worker under the supervisor's watch.

On a broker whose deliveries any connection may settle (``BrokerCapabilities.
settle_anywhere``: Redis), each child runs the consumer's whole loop on its own broker
connection, as a separate ``-P solo`` process would: fetch, decode, revoke check, ack, run,
ack. The supervisor (``watching``) is off the per-message path. It hears, in batches, what it
must know to keep its guarantees: what each fetch took (to give it back if the child dies),
when each task starts and ends (time limits, ``inspect``, events, a task lost with its
child), and which messages are settled. It tells the child when to begin, what is revoked,
and when to stop.

Reports are batched: one pipe write before each fetch, one when a task with a time limit
starts (the supervisor's clock for it must start now), and the rest every ``FLUSH_EVERY``
seconds. Flushing before each fetch keeps this true: when the child dies, every message it
held was reported, except those of its last fetch, which the broker's fetch receipt names.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

from caraway.execution import Outcome, execute
from caraway.protocol import _safe_repr
from caraway.worker import request as hooks
from caraway.worker.consumer import Consumer
from caraway.worker.job import Job
from caraway.worker.pools.base import LATE_LIMIT_SIGNALS, Pool, Work
from caraway.worker.pools.channel import Channel
from caraway.worker.pools.child import (
    Busy,
    ChildLimits,
    live_as_child,
    should_retire,
)
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from caraway.app import Caraway
    from caraway.engines.base.broker import Delivery
    from caraway.worker.pools.watching import FetchPlan

logger = logging.getLogger("caraway.worker")


def fetching_child_main(
    app: Caraway, conn: Connection, limits: ChildLimits, plan: FetchPlan, index: int,
    logfile: str | None,
) -> NoReturn:  # fmt: skip
    """The fetching child's whole life: it consumes as ``plan`` says, reporting as it goes."""
    live_as_child(index, logfile, lambda: _consume(app, Channel(conn), limits, plan))


def _consume(app: Caraway, conn: Channel, limits: ChildLimits, plan: FetchPlan) -> None:
    begin = conn.recv()  # ("go", revocations, stamps, changes), or None: stopped first
    if begin is None:
        return
    _, revoked, stamps, changes = begin
    app._broker = None  # its own connections and fetch receipt, not the fork server's copy
    broker = app.broker
    state = WorkerState()
    for task_id, terminate in revoked:
        state.revoke(task_id, terminate)
    state.revoke_stamps(stamps)
    timer = Timer(name="caraway-child-timer")
    reporter = Reporter(conn, limits)
    pool = MainThreadPool()
    consumer = ChildConsumer(
        app, broker, list(plan.queues), pool, timer, state, plan.hostname, plan.window
    )
    consumer.reporter = reporter
    for change in changes:
        _apply(consumer, change)
    consumer.monitor = reporter  # type: ignore[assignment]
    reporter.consumer = consumer
    reporter.add(("receipt", broker.fetch_receipt()))
    if broker.capabilities.leases:
        renew_every = max(broker.capabilities.lease_seconds / 3, 0.05)
        timer.call_repeatedly(renew_every, consumer.renew_leases)
    timer.start()
    threading.Thread(target=_listen, args=(conn, consumer), daemon=True).start()
    fetcher = threading.Thread(target=_fetch, args=(consumer, pool), name="caraway-fetcher")
    fetcher.start()
    try:
        pool.serve()  # tasks run in the main thread, where SIGUSR1 (soft limit) lands
        consumer.stop()
        fetcher.join()
        consumer.give_back()
        reporter.add(("bye",))  # what it held and did not report is settled or given back
    finally:
        timer.stop()
        reporter.flush()


def _fetch(consumer: ChildConsumer, pool: MainThreadPool) -> None:
    """The consumer's loop, in its own thread: the window fills while a task runs."""
    try:
        consumer.run()
    except BaseException:
        logger.exception("The fetch loop of pool child %d failed", os.getpid())
    finally:
        pool.close()


def _listen(conn: Channel, consumer: ChildConsumer) -> None:
    """The supervisor's messages: revocations, control changes, rate-limit tokens, and the
    stop (``None``, or the pipe closed)."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            consumer.reporter.answers.put(0.0)  # a fetch waiting for a token goes on
            consumer.stop()
            return
        kind, *rest = message
        if kind == "revoke":
            consumer.state.revoke(*rest)
        elif kind == "revoke_stamps":
            consumer.state.revoke_stamps(rest[0])
        elif kind == "token":
            consumer.reporter.answers.put(rest[0])
        else:
            _apply(consumer, message)


def _apply(consumer: ChildConsumer, change: tuple[Any, ...]) -> None:
    """A control command's change, as the supervisor applied it to itself."""
    kind, *rest = change
    if kind == "task":
        name, attributes = rest
        task = consumer.app.tasks.get(name)
        if task is not None:
            for attribute, value in attributes.items():
                setattr(task, attribute, value)
            consumer.reset_rate_limit(name)
    elif kind == "queues":
        queues, stopped, resumed = rest
        consumer.queues = list(queues)
        if stopped:
            consumer.broker.stop_consuming(stopped)
        if resumed:
            consumer.broker.resume_consuming(resumed)


class MainThreadPool(Pool):
    """The child's one slot: jobs the fetch thread hands over run in the main thread."""

    def __init__(self) -> None:
        super().__init__(1)
        self._jobs: collections.deque[Work] = collections.deque()
        self._changed = threading.Condition()
        self._closed = False

    def submit(self, work: Work) -> None:
        with self._changed:
            self._jobs.append(work)
            self._changed.notify()

    def serve(self) -> None:
        """Run jobs until ``close``; one left waiting then is given back, not run."""
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                work = self._jobs.popleft()
            try:
                work()
            except LATE_LIMIT_SIGNALS:
                continue  # a soft time limit that fired as its task ended
            except Exception:  # work settles its own failures
                logger.exception("Pool child %d: unexpected error; it goes on", os.getpid())

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def take_pending(self) -> list[Work]:
        with self._changed:
            pending = list(self._jobs)
            self._jobs.clear()
        return pending


class Reporter:
    """What the supervisor must know, batched: one pipe write for many events."""

    def __init__(self, conn: Channel, limits: ChildLimits) -> None:
        self.conn = conn
        self.limits = limits
        self.done = 0
        self.consumer: ChildConsumer | None = None
        self._pending: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        #: The supervisor's answers to ``ask`` (rate-limit waits), read by the listener.
        self.answers: queue.SimpleQueue[float] = queue.SimpleQueue()

    def ask(self, question: tuple[Any, ...]) -> float:
        """Ask the supervisor and wait for its answer (one question at a time)."""
        self.add(question)
        self.flush()
        return self.answers.get()

    def add(self, event: tuple[Any, ...]) -> None:
        with self._lock:
            self._pending.append(event)

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
            try:
                self.conn.send(pending)
            except OSError:  # the supervisor is gone; the listener stops the child
                return

    # The consumer's monitor interface (``started``/``finished``).

    def started(self, job: Job) -> None:
        self.add(("start", job.delivery.tag, job.id, time.monotonic(), job.time_limit))
        # Written before the task runs: if the child dies in it, the supervisor still reads
        # this from the pipe, and knows which task to fail.
        self.flush()

    def finished(self, job: Job, outcome: Outcome) -> None:
        self.done += 1
        retiring = should_retire(self.done, self.limits)
        # What the supervisor's task events show (task-succeeded, task-failed, task-retried).
        retval = outcome.retval
        reason = getattr(retval, "exc", None)
        result = repr(reason) if isinstance(reason, BaseException) else _safe_repr(retval)
        traceback = outcome.einfo.traceback if outcome.einfo is not None else None
        self.add(("end", job.id, job.name, outcome.state, result, traceback, retiring))
        if retiring and self.consumer is not None:
            self.consumer.stop()
            self.consumer.pool.close()  # type: ignore[attr-defined]


class ChildConsumer(Consumer):
    """The consumer of a fetching child: reports fetches and settlements, arms only the soft
    time limit (the supervisor kills the child at the hard one)."""

    reporter: Reporter

    def fetch(self, free: int, timeout: float) -> list[Delivery]:
        self.reporter.flush()  # what earlier fetches took is known before this one runs
        deliveries = super().fetch(free, timeout)
        if deliveries:
            fetched = [(d.tag, self.broker.portable(d)) for d in deliveries]
            self.reporter.add(("fetched", fetched))
        return deliveries

    def _rate_wait(self, job: Job) -> float:
        """Rate limits are the worker's, not each child's: the supervisor keeps the buckets."""
        limited = job.task.rate_limit or self.app.conf.task_default_rate_limit
        if not self.rate_limits_enabled or not limited:
            return 0.0
        return self.reporter.ask(("token", job.name))

    def _hold(self, job: Job, when: float, kind: str) -> None:
        super()._hold(job, when, kind)
        self.reporter.add(("held", job.delivery.tag, when, kind))  # ``inspect scheduled``

    def _revoke(self, job: Job, reason: str) -> None:
        super()._revoke(job, reason)
        self.reporter.add(("revoked", job.delivery.tag, reason))  # the task-revoked event

    def _done(self, job: Job | Delivery, pooled: bool = False) -> None:
        super()._done(job, pooled)
        self.reporter.add(("done", job.delivery.tag if isinstance(job, Job) else job.tag))

    def _settle_late(self, job: Job, outcome: Any) -> None:
        super()._settle_late(job, outcome)
        if outcome.reject is not None and outcome.reject.requeue:
            # Back in the queue, where another child may take it: the supervisor must not
            # give it back again if this child dies now.
            self.reporter.add(("done", job.delivery.tag))
            self.reporter.flush()

    def _execute_with_limits(self, job: Job) -> Any:
        if job.hooks is not None:
            hooks.accepted(job.hooks, os.getpid())
        soft = job.soft_time_limit
        if not soft:
            return _run(job)
        guard = threading.Lock()
        running = [True]

        def fire() -> None:
            with guard:
                if running[0]:
                    logger.error("%s exceeded its soft time limit", job.describe())
                    os.kill(os.getpid(), signal.SIGUSR1)  # interrupts a blocking call too
                    if job.hooks is not None:
                        hooks.timed_out(job.hooks, True, float(soft))

        self.timer.call_later(float(soft), fire)
        try:
            return _run(job)
        finally:
            with guard:
                running[0] = False


def _run(job: Job) -> Outcome:
    Busy.running = True
    try:
        return execute(job.task, job.request)
    finally:
        Busy.running = False
