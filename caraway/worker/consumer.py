"""The consumer: fills the prefetch window, turns messages into jobs and applies ack policy.

Every message ends in exactly one of: acked (ran, expired or revoked), released (given back
on shutdown, or requeued by ``Reject``), or set aside as a dead letter (cannot run here).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from caraway import serialization, signals, states
from caraway.canvas.chords import on_part_return
from caraway.engines.base.broker import Broker, Delivery, SettlementKept
from caraway.exceptions import (
    DecodeError,
    ImproperlyConfigured,
    NotRegistered,
    OperationalError,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevokedError,
    TimeLimitExceeded,
    Unreachable,
)
from caraway.execution import Outcome, coroutines, execute, execute_async
from caraway.protocol import TaskCall, parse_task_message
from caraway.request import Context
from caraway.worker import request as hooks
from caraway.worker.connection import BrokerLink, RetryPolicy
from caraway.worker.job import Job
from caraway.worker.pools.base import LATE_LIMIT_SIGNALS, Pool
from caraway.worker.ratelimit import TokenBucket, parse_rate
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.metrics.worker import WorkerMetrics
    from caraway.task import Task
    from caraway.worker.monitor import TaskMonitor

logger = logging.getLogger("caraway.worker")

#: How the log names each limit (the same words on every pool).
LIMIT_NAMES: dict[type[BaseException], str] = {
    SoftTimeLimitExceeded: "soft time limit",
    TimeLimitExceeded: "hard time limit",
}
#: Longest a fetch blocks, so a stop request is noticed within this many seconds.
FETCH_TIMEOUT = 0.2
#: The window refills once this share of it is free (or a pool slot would idle): one fetch
#: per few messages instead of one per finished task, which a pool that runs tasks outside
#: the consumer thread (prefork, threads) would otherwise cost.
REFILL_SHARE = 0.5
#: Longest the consumer waits for that share before it fetches for a smaller room anyway (s):
#: under load a share frees much sooner; with messages trickling in the window still fills.
REFILL_LINGER = 0.005
#: How often the consumer looks for deliveries its broker connection lost (s).
LOST_CHECK = 0.2
#: What ``revoke(..., terminate=True)`` sends (Celery's default); brokers keep no signal yet.
TERMINATE_SIGNAL = signal.SIGTERM


class Consumer:
    def __init__(
        self,
        app: Caraway,
        broker: Broker,
        queues: Sequence[str],
        pool: Pool,
        timer: Timer,
        state: WorkerState,
        hostname: str,
        prefetch: int,
        link: BrokerLink | None = None,
        count_running: bool = False,
    ) -> None:
        self.app = app
        #: The broker's reachability and retry policy (the worker's, connected at boot).
        self.link = link or BrokerLink(broker.describe(), RetryPolicy.from_conf(app.conf))
        self.broker = broker
        self.queues = list(queues)
        self.pool = pool
        self.timer = timer
        #: ETAs, expiry and rate limits are read on the timer's clock (a test's fake one).
        self.clock = timer.clock
        self.state = state
        self.hostname = hostname
        self.window = max(1, prefetch)
        #: The window counts running tasks too (``worker_disable_prefetch``: a message is
        #: taken only when a slot is free). Otherwise, as in Celery, it counts the messages
        #: reserved: a task acked as it starts leaves it (an ``acks_late`` one when done).
        self.count_running = count_running
        self.accept = serialization.normalize_accept(app.conf.accept_content)
        self.max_body_size: int | None = app.conf.worker_max_decompressed_size
        self.rate_limits_enabled = not app.conf.worker_disable_rate_limits
        self.deduplicate = bool(app.conf.worker_deduplicate_successful_tasks)
        self._buckets: dict[str, TokenBucket | None] = {}
        # Each task's own ``Request`` class: resolved now, so a bad one stops the worker's boot.
        self._request_classes = {
            name: hooks.request_class(task) for name, task in app.tasks.items()
        }
        # Jobs waiting for their ETA or a rate-limit token: by tag (to give back), and in a
        # heap of (when, seq, job, kind) released by the consumer's own thread, so a
        # solo pool runs them there too (never in the timer thread).
        self._held: dict[Any, Job] = {}
        self._holds: list[tuple[float, int, Job, str]] = []
        self._hold_seq = itertools.count()
        # ETA holds outside the prefetch window, and those kept in it once there were
        # ``worker_eta_task_limit`` outside: these stop fetching until some ETAs come due.
        self.eta_limit: int | None = app.conf.worker_eta_task_limit
        self._free_etas = 0
        self._counted_etas: set[Any] = set()
        # Messages taken from the broker and not yet settled; their leases are renewed.
        self._leased: set[Any] = set()
        # Messages counted against the prefetch window. Jobs waiting for an ETA are not
        # counted (as in Celery), so many future tasks never stall the consumer.
        self._inflight = 0
        # Tags of running jobs that left the window when they were acked at their start.
        self._started: set[Any] = set()
        # Jobs handed to the pool and not finished (waiting there or running).
        self._pooled = 0
        self._refill_at = max(1, int(self.window * REFILL_SHARE))
        self._slots = threading.Condition()
        self._stopping = threading.Event()
        self._revocation_cursor = 0
        # Deliveries of a closed connection dropped since the last report, and when to look.
        self._dropped = 0
        self._next_lost_check = 0.0
        #: The worker's task monitor (events, ``inspect active``, terminate), when it has one.
        self.monitor: TaskMonitor | None = None
        #: The worker's Prometheus metrics (``--metrics``), when it serves them.
        self.metrics: WorkerMetrics | None = None
        #: When the main loop last turned (``time.monotonic``): the liveness probe reads it.
        self.heartbeat = time.monotonic()
        broker.qos(self.window)

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop()``; returns once no more messages will be taken."""
        if self.pool.fetches_itself:
            self._watch()
            return
        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            self._drop_lost()
            timeout = self._release_due_holds()
            pause = self.link.pause()
            if pause > 0:  # the broker is away: the next try is not due yet
                self._stopping.wait(min(pause, timeout))
                continue
            with self._slots:
                if self._inflight >= self.window:
                    self._slots.wait(timeout)
                    continue
                if not self._may_fetch():
                    # Room, but less than a batch, and every pool slot has work: wait a
                    # little for more room, then take what fits (the window still fills).
                    self._slots.wait(min(timeout, REFILL_LINGER))
                free = self.window - self._inflight
                if free <= 0:
                    continue
            try:
                deliveries = self.fetch(free, timeout)
            except Unreachable as exc:
                self.link.failed(exc)  # raises once the retries are spent
                continue
            self.link.restored()
            for delivery in deliveries:
                if self._stopping.is_set():
                    self._give_back_one(delivery)
                    continue
                with self._slots:
                    self._inflight += 1
                    self._leased.add(delivery.tag)
                self.on_delivery(delivery)

    def _watch(self) -> None:
        """The pool's processes consume: keep the heartbeat until ``stop()``."""
        self.pool.begin(self)  # type: ignore[attr-defined]
        try:
            while not self._stopping.is_set():
                self.heartbeat = time.monotonic()
                self._stopping.wait(FETCH_TIMEOUT)
        finally:
            self.pool.stop_fetching()  # type: ignore[attr-defined]

    def fetch(self, free: int, timeout: float) -> list[Delivery]:
        """Take up to ``free`` messages, waiting up to ``timeout`` s when none is ready."""
        return self.broker.fetch(self.queues, free, timeout)

    def _may_fetch(self) -> bool:
        """Whether the window is worth a fetch now (call with ``_slots`` held): a share of it
        is free, or some free room and a pool slot with nothing to run next."""
        free = self.window - self._inflight
        return free >= self._refill_at or (free > 0 and self._pooled < self.pool.limit)

    @property
    def in_flight(self) -> int:
        """Messages counted against the prefetch window now: reserved, and running unless
        acked as they started."""
        return self._inflight

    @property
    def reserved_count(self) -> int:
        """Jobs in the window that have not started (taken, or waiting for a rate token)."""
        with self._slots:
            return self._inflight - sum(
                1 for job in list(self.state.active.values())
                if job.delivery.tag not in self._started
            )  # fmt: skip

    def stop(self) -> None:
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    def give_back(self) -> int:
        """Release every message held or queued but not started (warm shutdown)."""
        tags = [job.delivery.tag for job in self._held.values()]
        self._held.clear()
        self._holds.clear()
        self._leased.clear()
        with self._slots:
            self._free_etas = 0
            self._counted_etas.clear()
        for work in self.pool.take_pending():
            job = getattr(work, "job", None)
            if job is not None:
                tags.append(job.delivery.tag)
                with self._slots:
                    self._pooled -= 1
        lost = self.broker.lost(tags)  # the broker already took those back
        tags = [tag for tag in tags if tag not in lost]
        if tags:
            self.broker.release(tags)
        return len(tags)

    def _drop_lost(self) -> None:
        """Forget the held and queued messages of a closed broker connection, freeing their
        slots: the broker delivers them again. Jobs already running finish (and run again,
        as in Celery: their ack cannot be sent)."""
        now = time.monotonic()
        if not self.broker.capabilities.loses_deliveries or now < self._next_lost_check:
            return
        self._next_lost_check = now + LOST_CHECK
        with self._slots:
            leased = list(self._leased)
        lost = self.broker.lost(leased) if leased else set()
        if lost & self._held.keys():
            self._drop_lost_holds(lost)
        if lost - {job.delivery.tag for job in list(self.state.active.values())}:
            self._drop_lost_pending(lost)  # not only jobs that run: some wait in the pool
        with self._slots:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.warning(
                "Connection to %s lost: %d prefetched message(s) dropped; the broker"
                " delivers them again", self.broker.describe(), dropped,
            )  # fmt: skip

    def _drop_lost_holds(self, lost: set[Any]) -> None:
        kept = []
        for hold in self._holds:
            tag = hold[2].delivery.tag
            if tag not in lost or self._held.pop(tag, None) is None:
                kept.append(hold)
                continue
            with self._slots:
                self._dropped += 1
            if hold[3] == "eta":
                self._eta_due(tag)  # now counted in the window, as rate holds are
            self._done(hold[2])
        heapq.heapify(kept)
        self._holds = kept

    def _drop_lost_pending(self, lost: set[Any]) -> None:
        for work in self.pool.take_pending():
            job = getattr(work, "job", None)
            if job is None or job.delivery.tag not in lost:
                self.pool.submit(work if job is None else _Work(self, job))
                continue
            with self._slots:
                self._dropped += 1
            self._done(job, pooled=True)

    def _done(self, job: Job | Delivery, pooled: bool = False) -> None:
        """The message is settled (acked, released or set aside): free its slot.

        ``pooled``: the job came from the pool. The consumer thread is woken only when it
        may fetch, not once per finished task.
        """
        tag = job.delivery.tag if isinstance(job, Job) else job.tag
        with self._slots:
            if tag in self._started:
                self._started.discard(tag)  # it left the window when it started
            else:
                self._inflight -= 1
            if pooled:
                self._pooled -= 1
            self._leased.discard(tag)
            if self._may_fetch():
                self._slots.notify()

    # --- housekeeping, run by the timer ---------------------------------------------------

    def poll_revocations(self) -> None:
        if not self.link.connected:  # no connection attempts from the timer meanwhile
            return
        try:
            revoked, self._revocation_cursor = self.broker.revocations(self._revocation_cursor)
        except Unreachable as exc:  # the consumer reports the outage, once
            logger.debug("Cannot read revocations: %s", exc)
            return
        for task_id, terminate in revoked:
            self.state.revoke(task_id, terminate)
            if terminate and task_id in self.state.active:
                if self.pool.terminate(task_id, TERMINATE_SIGNAL):
                    logger.warning("Terminating %s (SIGTERM)", task_id)
                else:
                    logger.warning(
                        "Cannot terminate %s: tasks on the %s pool run to the end",
                        task_id, type(self.pool).__name__,
                    )  # fmt: skip

    def renew_leases(self) -> None:
        with self._slots:
            tags = list(self._leased)
        self.broker.renew(tags)  # also with none: a broker may hold kept settlements

    # --- one message -----------------------------------------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        job = self._make_job(delivery)
        if job is None:
            self._done(delivery)
            return
        if logger.isEnabledFor(logging.INFO):
            logger.info("Task %s received", job.describe())
        signals.task_received.send(sender=self, request=job.request)
        if self.metrics is not None:
            self.metrics.received(job)
        if self.state.is_revoked(job.id, job.request.stamps):
            self._revoke(job, "revoked")
            self._done(job)
            return
        eta = job.eta
        if eta is not None and eta > self.clock.time():
            max_hold = self.broker.capabilities.max_hold
            # Held longer, the broker would take the message back (RabbitMQ's consumer_timeout):
            # it keeps the message for us instead, and sends it back nearer the ETA.
            if (
                max_hold is not None
                and eta - self.clock.time() > max_hold
                and self.broker.defer(delivery, eta)
            ):
                logger.info("Task %s deferred by the broker until nearer its ETA", job.id)
                self._done(job)
                return
            with self._slots:
                if self.eta_limit is None or self._free_etas < self.eta_limit:
                    self._free_etas += 1
                    self._inflight -= 1
                    self._slots.notify()
                else:
                    self._counted_etas.add(job.delivery.tag)
            self._hold(job, eta, "eta")
            return
        self._schedule(job)

    def _make_job(self, delivery: Delivery) -> Job | None:
        if delivery.problem is not None:
            self._not_a_message(delivery, delivery.problem)
            return None
        try:
            call = parse_task_message(delivery.message, self.accept, self.max_body_size)
        except (SerializationError, TaskError, ValueError, TypeError) as exc:
            self._undecodable(delivery, exc)
            return None
        try:
            task = self.app.tasks[call.name]
            request_class = self._request_class(call.name, task)
        except NotRegistered as exc:
            self._unknown(delivery, call, exc)
            return None
        except ImproperlyConfigured as exc:  # its Request cannot be honoured
            where = self._dead_letter(delivery, str(exc))
            logger.error("%s The message is set aside in %s.", exc, where)
            self._safely(self.app.backend.mark_as_failure, call.id, exc, None)
            return None
        try:
            return Job(delivery, call, task, self.hostname, request_class)
        except (ValueError, TypeError) as exc:  # a header or property of the wrong type
            self._undecodable(delivery, exc)
            return None

    def job_for(self, delivery: Delivery) -> Job | None:
        """The job of a message another process of this worker took (a prefork child that
        fetches for itself): decoded here only when needed, with no side effect; None if it
        does not decode."""
        try:
            call = parse_task_message(delivery.message, self.accept, self.max_body_size)
            task = self.app.tasks[call.name]
            return Job(delivery, call, task, self.hostname, self._request_class(call.name, task))
        except Exception:  # the child settled that message itself
            return None

    def _request_class(self, name: str, task: Task[Any, Any]) -> type[hooks.Request] | None:
        """The task's ``Request`` class (one of a task registered after boot is resolved now:
        ``ImproperlyConfigured`` when it cannot be honoured)."""
        try:
            return self._request_classes[name]
        except KeyError:
            cls = self._request_classes[name] = hooks.request_class(task)
            return cls

    def _undecodable(self, delivery: Delivery, exc: Exception) -> None:
        message = delivery.message
        where = self._dead_letter(delivery, f"cannot decode: {exc}")
        logger.error(
            "Cannot decode message %s (content type %r), set aside in %s: %s",
            message.task_id, message.content_type, where, exc,
        )  # fmt: skip
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    def _not_a_message(self, delivery: Delivery, problem: str) -> None:
        where = self._dead_letter(delivery, problem)
        logger.error("Entry %s set aside in %s: %s", delivery.tag, where, problem)
        signals.task_rejected.send(sender=self, message=delivery.message, exc=DecodeError(problem))

    def _unknown(self, delivery: Delivery, call: TaskCall, exc: NotRegistered) -> None:
        hint = self.app.tasks.unknown_task_hint(call.name)
        where = self._dead_letter(delivery, hint)
        logger.error("%s The message is set aside in %s.", hint, where)
        signals.task_unknown.send(
            sender=self, name=call.name, id=call.id, message=delivery.message, exc=exc
        )
        self._safely(self.app.backend.mark_as_failure, call.id, exc, None)
        if call.embed.get("chord"):  # a chord's header task: its chord fails now, as in Celery
            part = Context(
                id=call.id, task=call.name, group=call.group, group_index=call.group_index,
                chord=call.embed["chord"], root_id=call.root_id, parent_id=call.parent_id,
            )  # fmt: skip
            self._safely(on_part_return, self.app, part, states.FAILURE, exc)

    def _hold(self, job: Job, when: float, kind: str) -> None:
        """Keep ``job`` until ``when``; ``kind`` is "eta" or "rate" (a reserved token)."""
        self._held[job.delivery.tag] = job
        heapq.heappush(self._holds, (when, next(self._hold_seq), job, kind))

    def _release_due_holds(self) -> float:
        """Schedule the held jobs that are due; returns how long the loop may block."""
        while self._holds and self._holds[0][0] <= self.clock.time():
            _, _, job, kind = heapq.heappop(self._holds)
            if self._held.pop(job.delivery.tag, None) is None:
                continue
            if kind == "eta":
                self._eta_due(job.delivery.tag)
            self._schedule(job, limit_rate=kind == "eta")
        if not self._holds:
            return FETCH_TIMEOUT
        return min(FETCH_TIMEOUT, max(self._holds[0][0] - self.clock.time(), 0.001))

    def _eta_due(self, tag: Any) -> None:
        """An ETA hold ends: one outside the window now counts in it."""
        with self._slots:
            if tag in self._counted_etas:
                self._counted_etas.discard(tag)
            else:
                self._free_etas -= 1
                self._inflight += 1

    def _expired(self, job: Job) -> bool:
        return job.call.expires is not None and job.call.expires.timestamp() < self.clock.time()

    def _schedule(self, job: Job, limit_rate: bool = True) -> None:
        if self._expired(job):
            self._revoke(job, "expired")
            self._done(job)
            return
        wait = self._rate_wait(job) if limit_rate else 0.0
        if wait > 0:
            # The bucket reserved a token for this job: when due it runs without another.
            self._hold(job, self.clock.time() + wait, "rate")
            return
        with self._slots:
            self._pooled += 1
        self.pool.submit(_Work(self, job))

    def _rate_wait(self, job: Job) -> float:
        return self.rate_wait(job.name) if self.rate_limits_enabled else 0.0

    def rate_wait(self, name: str) -> float:
        """Seconds until task ``name`` may run, its token reserved (0: at once)."""
        if name not in self._buckets:
            task = self.app.tasks[name]
            rate = parse_rate(task.rate_limit or self.app.conf.task_default_rate_limit)
            self._buckets[name] = TokenBucket(rate, clock=self.clock) if rate > 0 else None
        bucket = self._buckets[name]
        return 0.0 if bucket is None else bucket.take()

    def _revoke(self, job: Job, reason: str) -> None:
        self._settle(job, "ack", partial(self.broker.ack, [job.delivery.tag]))
        if self.metrics is not None:
            self.metrics.revoked(job)
        logger.info("Discarding %s: %s", job.describe(), reason)
        if not job.call.ignore_result:
            self._safely(
                self.app.backend.store_result, job.id, TaskRevokedError(reason),
                states.REVOKED, None, job.request,
            )  # fmt: skip
        if job.request.chord:  # a revoked chord header task fails its chord, as in Celery
            self._safely(
                on_part_return, self.app, job.request, states.REVOKED, TaskRevokedError(reason)
            )
        signals.task_revoked.send(
            sender=job.task, request=job.request, terminated=False, signum=None,
            expired=reason == "expired",
        )  # fmt: skip

    def _settle(self, job: Job, what: str, settle: Callable[[], object]) -> bool:
        """Ack or release; a broker that is away never stops the caller (a pool thread).

        True when done, or kept by the broker to send once it is back (``SettlementKept``);
        False when lost: the broker delivers the message again.
        """
        try:
            settle()
        except SettlementKept:
            logger.warning(
                "Task %s: the broker is away; its %s is kept and will be retried when the"
                " broker is back", job.describe(), what,
            )  # fmt: skip
        except OperationalError as exc:
            logger.warning(
                "Task %s: could not %s its message (%s); the broker will deliver it again",
                job.describe(), what, exc,
            )  # fmt: skip
            return False
        return True

    def _give_back_one(self, delivery: Delivery) -> None:
        """A message fetched as the worker stops goes straight back (or, with the broker
        away, comes back when its lease ends)."""
        try:
            self.broker.release([delivery.tag])
        except OperationalError as exc:
            logger.info("Message %s comes back when its lease ends: %s", delivery.tag, exc)

    def _dead_letter(self, delivery: Delivery, reason: str) -> str:
        """Set the message aside; says where, for the caller's log line."""
        try:
            where = self.broker.dead_letter(delivery, reason)
        except SettlementKept:
            where = "the dead letters once the broker is back (it is away)"
        except OperationalError as exc:
            return f"nowhere ({exc}); the broker will deliver it again"
        if self.metrics is not None:
            self.metrics.dead_lettered()
        return where

    def _safely(self, fun: Any, *args: Any) -> None:
        """Result writes on the side paths must never stop (nor stall) the consumer."""
        try:
            with self.app.backend.without_retries():
                fun(*args)
        except OperationalError as exc:
            logger.error("Could not store a result with %r: %s", fun, exc)
        except Exception:
            logger.exception("Could not store a result with %r", fun)

    # --- running (in a pool thread) ----------------------------------------------------

    def run_job(self, job: Job) -> None:
        try:
            if self._begin(job):
                outcome = self.pool.execute(job, self._execute_with_limits)
                self.finish(job, outcome)
        except LATE_LIMIT_SIGNALS:
            logger.warning("%s: a time limit fired as the task finished", job.describe())
        except Exception:
            self._internal_error(job)
        finally:
            self.state.active.pop(job.id, None)
            self._done(job, pooled=True)

    async def run_job_async(self, job: Job) -> None:
        """``run_job`` for an ``async def`` task on the asyncio pool's loop."""
        try:
            if self._begin(job):
                self.finish(job, await self._execute_async_with_limits(job))
        except Exception:
            self._internal_error(job)
        finally:
            self.state.active.pop(job.id, None)
            self._done(job, pooled=True)

    def _begin(self, job: Job) -> bool:
        """Early ack and bookkeeping before the body runs; False when it must not run."""
        if self._stopping.is_set():
            # A warm shutdown gives back what has not started: this one left the pool's
            # queue before the consumer saw the stop (it may sit in a fetch for a moment).
            self._settle(job, "release", partial(self.broker.release, [job.delivery.tag]))
            return False
        if self.broker.capabilities.loses_deliveries and self.broker.lost([job.delivery.tag]):
            # Its connection closed: the broker delivers it again.
            with self._slots:
                self._dropped += 1
            return False
        if self.state.is_revoked(job.id, job.request.stamps):
            self._revoke(job, "revoked")
            return False
        if self._expired(job):  # it expired while it waited for a pool slot: not run (Celery)
            self._revoke(job, "expired")
            return False
        if self.deduplicate and job.acks_late and job.delivery.redelivered and self._succeeded(job):
            self._settle(job, "ack", partial(self.broker.ack, [job.delivery.tag]))
            logger.info("Skipping %s: it already completed successfully", job.describe())
            return False
        if not job.acks_late and not self._settle(
            job, "ack", partial(self.broker.ack, [job.delivery.tag])
        ):
            return False  # the broker delivers it again: running it now could run it twice
        self.state.active[job.id] = job
        if not job.acks_late and not self.count_running:
            self._leave_window(job)
        if self.monitor is not None:
            self.monitor.started(job)
        if self.metrics is not None:
            self.metrics.started(job)
        return True

    def _leave_window(self, job: Job) -> None:
        """A task acked as it starts is no longer reserved: its place in the window goes to
        the next message, as Celery's prefetch count counts unacked messages only."""
        with self._slots:
            self._started.add(job.delivery.tag)
            self._inflight -= 1
            if self._may_fetch():
                self._slots.notify()

    def _succeeded(self, job: Job) -> bool:
        """``worker_deduplicate_successful_tasks``: is a redelivered late-ack task stored as
        SUCCESS already (its worker died after storing the result, before the ack)?"""
        try:
            return self.app.backend.get_state(job.id) == states.SUCCESS
        except Exception as exc:  # cannot tell: running it again is what Celery does too
            logger.warning("Could not check whether %s already succeeded: %s", job.describe(), exc)
            return False

    def finish(self, job: Job, outcome: Any) -> None:
        """The run ended with ``outcome``: bookkeeping, events, hooks, the late ack."""
        self.state.active.pop(job.id, None)
        self.state.task_done(job.name)
        if self.monitor is not None:
            self.monitor.finished(job, outcome)
        if self.metrics is not None:
            self.metrics.finished(job, outcome)
        if job.hooks is not None:
            hooks.finished(job.hooks, outcome)
        if job.acks_late:
            self._settle_late(job, outcome)
        elif outcome.reject is not None:
            logger.warning("%s rejected after its message was acked", job.describe())

    def _internal_error(self, job: Job) -> None:
        """The work around the task failed (say, its result could not be stored): settled as
        a failure, as in Celery, so a backend outage never reruns tasks in a loop."""
        error = sys.exc_info()[1]
        outcome = Outcome(states.FAILURE, error)
        if isinstance(error, OperationalError):  # a broker or backend away: its text says so
            logger.error("Could not complete %s: %s", job.describe(), error)
        else:
            logger.exception("Internal error running %s", job.describe())
        if self.monitor is not None:
            self.monitor.finished(job, outcome)
        if self.metrics is not None:
            self.metrics.finished(job, outcome)
        if job.acks_late:
            self._settle_late(job, outcome)

    def _settle_late(self, job: Job, outcome: Any) -> None:
        tags = [job.delivery.tag]
        reject = outcome.reject
        if reject is not None and reject.requeue:
            self._settle(job, "release", partial(self.broker.release, tags))
        elif reject is not None:
            where = self._dead_letter(job.delivery, f"rejected: {reject.reason!r}")
            logger.warning("%s rejected; message set aside in %s", job.describe(), where)
        elif outcome.state == states.FAILURE and not self._acks_failure(job, outcome):
            where = self._dead_letter(job.delivery, f"failed: {outcome.retval!r}")
            logger.warning("%s failed; message set aside in %s", job.describe(), where)
        else:
            self._settle(job, "ack", partial(self.broker.ack, tags))

    def _acks_failure(self, job: Job, outcome: Any) -> bool:
        """Celery 5.7's order: ``task_acks_on_timeout`` / ``task_acks_on_failure`` when set,
        else the task's ``acks_on_failure_or_timeout``, else the setting of that name."""
        conf = self.app.conf
        timed_out = isinstance(outcome.retval, TimeLimitExceeded)
        value = conf.task_acks_on_timeout if timed_out else conf.task_acks_on_failure
        if value is None:
            value = job.task.acks_on_failure_or_timeout
        return bool(conf.task_acks_on_failure_or_timeout if value is None else value)

    def _execute_with_limits(self, job: Job) -> Any:
        """Run the job with its soft and hard limits armed on the timer."""
        if job.hooks is not None:
            hooks.accepted(job.hooks, os.getpid())
        if not job.soft_time_limit and not job.time_limit:
            return execute(job.task, job.request)
        thread_id = threading.get_ident()
        owner = self.pool.owner()
        guard = threading.Lock()
        running = [True]
        for limit, exc_type in (
            (job.soft_time_limit, SoftTimeLimitExceeded),
            (job.time_limit, TimeLimitExceeded),
        ):
            if limit:

                def fire(exc: type[BaseException] = exc_type, after: float = limit) -> None:
                    with guard:
                        if running[0]:
                            logger.error("%s exceeded its %s", job.describe(), LIMIT_NAMES[exc])
                            # An async body on this thread's loop is cancelled at its await;
                            # sync code gets the exception from the pool (at its next
                            # instruction on a thread, its next switch on a greenlet).
                            if not coroutines.interrupt(thread_id, exc):
                                self.pool.interrupt(owner, exc)
                            if job.hooks is not None:
                                hooks.timed_out(job.hooks, exc is SoftTimeLimitExceeded, after)

                self.timer.call_later(float(limit), fire)
        try:
            return execute(job.task, job.request)
        finally:
            with guard:
                running[0] = False

    async def _execute_async_with_limits(self, job: Job) -> Any:
        """The async twin: limits are loop timers that cancel the body at its ``await``."""
        if job.hooks is not None:
            hooks.accepted(job.hooks, os.getpid())
        owner = asyncio.current_task()
        loop = asyncio.get_running_loop()
        handles = [
            loop.call_later(float(limit), self._limit_reached, job, owner, exc_type, limit)
            for limit, exc_type in (
                (job.soft_time_limit, SoftTimeLimitExceeded),
                (job.time_limit, TimeLimitExceeded),
            )
            if limit
        ]
        try:
            return await execute_async(job.task, job.request, owner)
        finally:
            for handle in handles:
                handle.cancel()

    def _limit_reached(
        self, job: Job, owner: Any, exc_type: type[BaseException], limit: float
    ) -> None:
        logger.error("%s exceeded its %s", job.describe(), LIMIT_NAMES[exc_type])
        coroutines.interrupt(owner, exc_type)
        if job.hooks is not None:
            hooks.timed_out(job.hooks, exc_type is SoftTimeLimitExceeded, limit)

    # --- remote control (caraway.worker.commands) ---------------------------------------------

    def held_jobs(self) -> list[tuple[float, Job, str]]:
        """Jobs waiting for their ETA ("eta") or a rate-limit token ("rate"), soonest first."""
        holds = sorted(self._holds, key=lambda hold: hold[:2])
        mine = [(when, job, kind) for when, _, job, kind in holds if job.delivery.tag in self._held]
        return mine + sorted(self.pool.held(), key=lambda hold: hold[0])

    def reset_rate_limit(self, task_name: str) -> None:
        """Forget the task's token bucket: the next message builds one at its new rate."""
        self._buckets.pop(task_name, None)


class _Work:
    """A job ready for the pool; keeps the job reachable for a warm shutdown."""

    __slots__ = ("consumer", "job")

    def __init__(self, consumer: Consumer, job: Job) -> None:
        self.consumer = consumer
        self.job = job

    def __call__(self) -> None:
        self.consumer.run_job(self.job)

    @property
    def is_async(self) -> bool:
        """Whether the task body is ``async def`` (the asyncio pool awaits it on its loop)."""
        return self.job.is_async

    async def run_async(self) -> None:
        await self.consumer.run_job_async(self.job)
