"""``-P prefork``: N child processes; this (supervisor) process keeps the broker.

The consumer, acks, leases and revocations stay here, on the one broker connection; children
come from a fork server (``forker``) forked before anything else runs. Each
pool thread owns one child: it sends the decoded job down the child's pipe and waits for
the answer; the child runs the task and stores its result itself. The thread enforces the
time limits (SIGUSR1 for the soft one, SIGKILL for the hard one) and replaces a child that
died or retired. See docs/worker.md for the picture.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, NoReturn

from caraway import signals
from caraway.exceptions import (
    TimeLimitExceeded,
)
from caraway.execution import Outcome
from caraway.utils.log import expand_node_path
from caraway.worker import request as hooks
from caraway.worker.pools import lost
from caraway.worker.pools.base import PoolOptions
from caraway.worker.pools.channel import Channel
from caraway.worker.pools.child import ChildLimits, Reply, child_main
from caraway.worker.pools.forker import Forker, exit_status
from caraway.worker.pools.threads import ThreadPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from caraway.app import Caraway
    from caraway.worker.job import Job

logger = logging.getLogger("caraway.worker")


class Child:
    """The supervisor's handle on one child process."""

    def __init__(self, pid: int, conn: Connection, status_fd: int) -> None:
        self.pid = pid
        self.conn = Channel(conn)
        self.status_fd = status_fd
        self.task_id: str | None = None
        self.terminated_with: int | None = None
        self._exitcode: int | None = None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def reap(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit; its status as ``subprocess`` reports it (-N: signal N).

        Idempotent: the lost-child path and the slot's retirement may both reap it, and its
        status fd can be closed only once.
        """
        if self._exitcode is None:
            self.conn.close()
            self._exitcode = exit_status(self.status_fd, timeout)
        return self._exitcode


class PreforkPool(ThreadPool):
    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        if self.options.app is None:
            raise ValueError("the prefork pool needs the app its children run tasks for")
        self.app: Caraway = self.options.app
        self.limits = ChildLimits(
            self.options.max_tasks_per_child, self.options.max_memory_per_child
        )
        self._children: list[Child | None] = [None] * self.limit
        self._slot = threading.local()
        self._cold = False
        self._forker = Forker(self._start_child)

    def start(self) -> None:
        self._forker.start()
        for slot in range(self.limit):
            self._children[slot] = self._fork(slot)
        super().start()

    def grow(self, n: int) -> None:
        """More slots; each new slot forks its child when it takes its first job."""
        self._children.extend([None] * max(0, n))
        super().grow(n)

    def processes(self) -> list[int]:
        return [child.pid for child in self._children if child is not None]

    def _start_child(self, conn: Connection, index: int) -> NoReturn:
        """Runs in the fork server's new child."""
        template = self.options.logfile
        logfile = expand_node_path(template, self.options.hostname, index) if template else None
        child_main(self.app, conn, self.limits, index, logfile)

    def _fork(self, slot: int) -> Child:
        signals.worker_before_create_process.send(sender=self)
        pid, conn, status_fd = self._forker.fork(slot + 1)
        logger.info("Pool child %d started", pid)
        return Child(pid, conn, status_fd)

    def _loop(self, slot: int) -> None:
        self._slot.index = slot
        try:
            super()._loop(slot)
        finally:
            self._retire(slot)

    def _retire(self, slot: int) -> None:
        child = self._children[slot]
        self._children[slot] = None
        if child is None:
            return
        with contextlib.suppress(OSError):  # gone already
            child.conn.send(None)
        child.reap()

    # --- one job ---------------------------------------------------------------------------

    def execute(self, job: Job, run_here: Callable[[Job], Outcome]) -> Outcome:
        slot: int = self._slot.index
        child = self._children[slot]
        if child is None:
            child = self._children[slot] = self._fork(slot)
        child.task_id = job.id
        if job.hooks is not None:
            hooks.accepted(job.hooks, child.pid)
        try:
            child.conn.send((job.name, job.request.as_dict()))
            reply: Reply = self._wait_for_reply(child, job)
        except (EOFError, OSError):
            return self._child_lost(slot, child, job)
        except TimeLimitExceeded as exc:
            child.reap()
            self._replace(slot, "was killed at the hard time limit")
            return lost.failed(self.app, job, exc)
        finally:
            child.task_id = None
        if reply.retiring or child.terminated_with is not None:
            # A terminate that came as the task ended hits an idle child: replace it too.
            child.reap()
            self._replace(slot, "retired" if reply.retiring else "was terminated")
        return reply.outcome()

    def _wait_for_reply(self, child: Child, job: Job) -> Reply:
        """The child's answer. EOFError: it died first; TimeLimitExceeded: we killed it."""
        started = time.monotonic()
        soft_at = started + job.soft_time_limit if job.soft_time_limit else None
        hard_at = started + job.time_limit if job.time_limit else None
        while True:
            now = time.monotonic()
            deadlines = [d for d in (soft_at, hard_at) if d is not None]
            wait = max(0.0, min(deadlines) - now) if deadlines else None
            if wait is None or child.conn.poll(wait):  # no limit: no poll either
                reply: Reply = child.conn.recv()
                return reply
            now = time.monotonic()
            if soft_at is not None and now >= soft_at:
                logger.error("%s exceeded its soft time limit", job.describe())
                child.signal(signal.SIGUSR1)
                soft_at = None
                if job.hooks is not None:
                    hooks.timed_out(job.hooks, True, float(job.soft_time_limit or 0))
            if hard_at is not None and now >= hard_at:
                logger.error("%s exceeded its hard time limit: killing its child", job.describe())
                child.signal(signal.SIGKILL)
                if job.hooks is not None:
                    hooks.timed_out(job.hooks, False, float(job.time_limit or 0))
                raise TimeLimitExceeded(job.time_limit)

    def _child_lost(self, slot: int, child: Child, job: Job) -> Outcome:
        exitcode = child.reap()
        if self._cold:
            self._children[slot] = None
            return lost.stopped_cold(self.app, job)
        self._replace(slot, lost.exited(exitcode))
        if child.terminated_with is not None:  # revoke(..., terminate=True)
            return lost.terminated(self.app, job, child.terminated_with)
        return lost.worker_lost(self.app, job, exitcode)

    def _replace(self, slot: int, why: str) -> None:
        logger.info("Pool child in slot %d %s; starting another", slot, why)
        self._children[slot] = None if self._cold else self._fork(slot)

    # --- control ---------------------------------------------------------------------------

    def terminate(self, task_id: str, signum: int) -> bool:
        for child in self._children:
            if child is not None and child.task_id == task_id:
                child.terminated_with = signum
                child.signal(signum)
                return True
        return False

    def stop(self, wait: bool = True) -> None:
        if not wait:
            self._cold = True
            for child in self._children:
                if child is not None:
                    child.signal(signal.SIGKILL)
        super().stop(wait)
        if not wait:
            for thread in self._threads:
                thread.join(2.0)  # long enough to give acks_late messages back
        self._forker.stop(wait)
