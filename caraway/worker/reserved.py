"""``ReservingPool``: wraps the pool to know which jobs wait in it, not started yet.

That is what ``inspect reserved`` lists (with the jobs held for a rate-limit token), and it
needs nothing from the consumer or the pools themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from caraway.worker.pools.base import Pool, Work

if TYPE_CHECKING:
    from caraway.execution import Outcome
    from caraway.worker.job import Job


class _Reserved:
    """A job's work, remembered until it starts; keeps ``job`` visible for give-back."""

    __slots__ = ("job", "pool", "work")

    def __init__(self, pool: ReservingPool, work: Work) -> None:
        self.pool = pool
        self.work = work
        self.job = getattr(work, "job", None)

    def __call__(self) -> Any:
        self.pool.started(self)
        return self.work()

    @property
    def is_async(self) -> bool:
        """For the asyncio pool: whether the job's body is a coroutine to await."""
        return bool(getattr(self.work, "is_async", False))

    async def run_async(self) -> Any:
        self.pool.started(self)
        return await self.work.run_async()  # type: ignore[attr-defined]


class ReservingPool(Pool):
    def __init__(self, inner: Pool) -> None:
        super().__init__(inner.limit, inner.options)
        self.inner = inner
        self._waiting: dict[int, Any] = {}
        self._lock = threading.Lock()

    @property
    def fetches_itself(self) -> bool:  # type: ignore[override]
        return self.inner.fetches_itself

    def start(self) -> None:
        self.inner.start()

    def begin(self, consumer: Any) -> None:
        self.inner.begin(consumer)  # type: ignore[attr-defined]

    def sync(self) -> None:
        self.inner.sync()

    def held(self) -> list[tuple[float, Any, str]]:
        return self.inner.held()

    def reconfigure(self, change: tuple[Any, ...]) -> None:
        self.inner.reconfigure(change)

    def stop_fetching(self) -> None:
        self.inner.stop_fetching()  # type: ignore[attr-defined]

    def submit(self, work: Work) -> None:
        reserved = _Reserved(self, work)
        if reserved.job is not None:
            with self._lock:
                self._waiting[id(reserved)] = reserved.job
        self.inner.submit(reserved)

    def started(self, reserved: _Reserved) -> None:
        with self._lock:
            self._waiting.pop(id(reserved), None)

    def waiting(self) -> list[Any]:
        """Jobs submitted and not started, oldest first."""
        with self._lock:
            waiting = list(self._waiting.values())
        return waiting + self.inner.reserved()

    def execute(self, job: Job, run_here: Callable[[Job], Outcome]) -> Outcome:
        return self.inner.execute(job, run_here)

    def owner(self) -> Any:
        return self.inner.owner()

    def interrupt(self, owner: Any, exc_type: type[BaseException]) -> bool:
        return self.inner.interrupt(owner, exc_type)

    def terminate(self, task_id: str, signum: int) -> bool:
        return self.inner.terminate(task_id, signum)

    def take_pending(self) -> list[Work]:
        pending = self.inner.take_pending()
        with self._lock:
            for work in pending:
                self._waiting.pop(id(work), None)
        return pending

    def stop(self, wait: bool = True) -> None:
        self.inner.stop(wait)

    def live_slots(self) -> int:
        return self.inner.live_slots()

    def processes(self) -> list[int]:
        return self.inner.processes()

    def grow(self, n: int) -> None:
        self.inner.grow(n)
        self.limit = self.inner.limit

    def shrink(self, n: int) -> None:
        self.inner.shrink(n)
        self.limit = self.inner.limit
