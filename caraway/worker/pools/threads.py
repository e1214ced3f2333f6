"""``-P threads``: N threads in this process; good for I/O-bound tasks."""

from __future__ import annotations

import logging
import queue
import threading

from caraway.worker.pools.base import LATE_LIMIT_SIGNALS, Pool, PoolOptions, Work

logger = logging.getLogger("caraway.worker")

_STOP = object()


class ThreadPool(Pool):
    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads = [self._thread(n) for n in range(self.limit)]

    def _thread(self, n: int) -> threading.Thread:
        return threading.Thread(target=self._loop, args=(n,), name=f"caraway-pool-{n}", daemon=True)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _loop(self, slot: int) -> None:
        while True:
            try:
                work = self._queue.get()
                if work is _STOP:
                    return
                work()  # type: ignore[operator]
            except LATE_LIMIT_SIGNALS:
                continue  # a time limit that fired as its task ended: the thread lives on
            except Exception:
                # Work settles its own failures; one that escapes must not cost a slot.
                logger.exception("Pool thread %d: unexpected error; it goes on serving", slot)

    def live_slots(self) -> int:
        """Threads still running: one that died does not come back by itself."""
        return sum(thread.is_alive() for thread in self._threads)

    def submit(self, work: Work) -> None:
        self._queue.put(work)

    def take_pending(self) -> list[Work]:
        pending: list[Work] = []
        stops = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stops += 1
            else:
                pending.append(item)  # type: ignore[arg-type]
        for _ in range(stops):  # a shrink still pending stays pending
            self._queue.put(_STOP)
        return pending

    def grow(self, n: int) -> None:
        for _ in range(max(0, n)):
            thread = self._thread(len(self._threads))
            self._threads.append(thread)
            thread.start()
            self.limit += 1

    def shrink(self, n: int) -> None:
        """Ends ``n`` threads once each finishes the work queued before this call."""
        n = min(max(0, n), self.limit - 1)
        for _ in range(n):
            self._queue.put(_STOP)
        self.limit -= n

    def stop(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread.is_alive():
                    thread.join()
