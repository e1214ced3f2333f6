"""The pool contract."""

from __future__ import annotations

import ctypes
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.execution import Outcome
    from caraway.worker.job import Job

Work = Callable[[], Any]
#: What a time limit raises in a pool thread; one may land just after its task ended.
LATE_LIMIT_SIGNALS = (SoftTimeLimitExceeded, TimeLimitExceeded)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """What pools with processes need from the worker."""

    app: Caraway | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB, as Celery
    logfile: str | None = None  # the template: children fill in their own %i / %I
    hostname: str = "celery"
    #: For pools whose children fetch for themselves: the queues, and the whole prefetch
    #: window (shared among the children).
    queues: tuple[str, ...] = ()
    prefetch: int = 0


class Pool(ABC):
    """Runs jobs; ``limit`` is how many run at once."""

    #: Whether the pool's processes fetch, run and settle messages themselves (the consumer
    #: then only tells it when to begin and to stop fetching).
    fetches_itself = False

    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        self.limit = max(1, limit)
        self.options = options or PoolOptions()

    def start(self) -> None:  # noqa: B027 - solo has nothing to start
        """Start the threads or processes that run jobs."""

    @abstractmethod
    def submit(self, work: Work) -> None:
        """Run ``work`` (now, or when a slot frees)."""

    def execute(self, job: Job, run_here: Callable[[Job], Outcome]) -> Outcome:
        """Run the job's task body; in the calling pool thread unless the pool has processes."""
        return run_here(job)

    def owner(self) -> Any:
        """Who runs the calling code, for ``interrupt``: this thread (a greenlet on gevent)."""
        return threading.get_ident()

    def interrupt(self, owner: Any, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the task ``owner`` runs: how time limits and
        ``revoke(terminate=True)`` reach a task in this process. False when it cannot."""
        return raise_in_thread(owner, exc_type)

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the running task ``task_id`` with ``signum``; False where that is impossible."""
        return False

    def reconfigure(self, change: tuple[Any, ...]) -> None:  # noqa: B027 - most have no one to tell
        """A control command changed what the worker consumes or how a task runs:
        ``("task", name, {attribute: value})`` or ``("queues", names, stopped, resumed)``.
        Pools whose processes consume for themselves pass it on."""

    def sync(self) -> None:  # noqa: B027 - only pools that hear from their processes late
        """Take in now what the pool's processes reported so far (``inspect``, events)."""

    def held(self) -> list[tuple[float, Any, str]]:
        """Jobs the pool's own processes hold for their ETA or a rate-limit token:
        (when, job, "eta" or "rate")."""
        return []

    def reserved(self) -> list[Any]:
        """Jobs the pool's own processes took and have not started (``inspect reserved``)."""
        return []

    def take_pending(self) -> list[Work]:
        """Remove and return work not started yet (given back on a warm shutdown)."""
        return []

    def stop(self, wait: bool = True) -> None:  # noqa: B027 - solo has nothing to stop
        """Stop accepting work; with ``wait``, let running work finish."""

    def processes(self) -> list[int]:
        """Pids of the processes that run tasks (``inspect stats`` ``pool.processes``)."""
        return [os.getpid()]

    def live_slots(self) -> int:
        """How many of the ``limit`` slots can still run work; fewer means one died
        unreplaced (the liveness probe fails). Pools without threads of their own: all."""
        return self.limit

    def grow(self, n: int) -> None:
        """Run ``n`` more jobs at once (``pool_grow``)."""
        raise NotImplementedError(f"the {type(self).__name__} cannot grow")

    def shrink(self, n: int) -> None:
        """Run ``n`` fewer jobs at once, never fewer than one (``pool_shrink``)."""
        raise NotImplementedError(f"the {type(self).__name__} cannot shrink")


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` inside another thread at its next Python instruction.

    Threads cannot be killed; this is how a time limit reaches a task on a thread. Code
    blocked in C (a long ``time.sleep``, a socket read) sees it only when that call returns.
    """
    if thread_id == threading.get_ident():
        raise exc_type()
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    return bool(done == 1)
