"""``-P asyncio``: one event loop running up to ``-c`` tasks at once (``-c 500`` is normal).

``async def`` tasks are awaited on the loop; their time limits cancel them at an ``await``.
Sync tasks run in a thread executor beside the loop (so they never block it) and get the
threads pool's limits. Result writes and acks are short sync calls made on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from caraway.worker.pools.base import Pool, PoolOptions, Work

#: Sync tasks on this pool share at most this many threads; more would only contend.
MAX_SYNC_THREADS = 32


class AsyncWork(Protocol):
    is_async: bool

    def __call__(self) -> None: ...

    async def run_async(self) -> None: ...


class AsyncioPool(Pool):
    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="caraway-asyncio", daemon=True)
        self._executor = ThreadPoolExecutor(
            max_workers=min(self.limit, MAX_SYNC_THREADS), thread_name_prefix="caraway-sync"
        )
        self._pending: collections.deque[AsyncWork] = collections.deque()
        self._running: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:  # clients kept for the loop's life (caraway.calling.async_api's) close here
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())

    def submit(self, work: Work) -> None:
        with self._lock:
            self._pending.append(work)  # type: ignore[arg-type]
        self._loop.call_soon_threadsafe(self._fill)

    def _fill(self) -> None:
        """Start pending work while slots are free (runs on the loop)."""
        with self._lock:
            while self._pending and len(self._running) < self.limit:
                work = self._pending.popleft()
                task = self._loop.create_task(self._run(work))
                self._running.add(task)
                task.add_done_callback(self._finished)

    async def _run(self, work: AsyncWork) -> None:
        if work.is_async:
            await work.run_async()
        else:
            await self._loop.run_in_executor(self._executor, work)

    def _finished(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._running.discard(task)
            self._idle.notify_all()
        self._fill()

    def live_slots(self) -> int:
        """Every slot runs on the loop's thread: all of them, or none once it died."""
        return self.limit if self._thread.is_alive() else 0

    def take_pending(self) -> list[Work]:
        with self._lock:
            pending: list[Any] = list(self._pending)
            self._pending.clear()
        return pending

    def stop(self, wait: bool = True) -> None:
        if wait:
            with self._idle:
                while self._running or self._pending:
                    self._idle.wait(0.1)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if wait:
            self._thread.join()
            self._loop.close()
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
