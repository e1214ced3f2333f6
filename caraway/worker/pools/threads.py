"""``-P threads``: N threads in this process; good for I/O-bound tasks."""

from __future__ import annotations

import queue
import threading

from caraway.worker.pools.base import LATE_LIMIT_SIGNALS, Pool, Work

_STOP = object()


class ThreadPool(Pool):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"caraway-pool-{n}", daemon=True)
            for n in range(self.limit)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            try:
                work = self._queue.get()
                if work is _STOP:
                    return
                work()  # type: ignore[operator]
            except LATE_LIMIT_SIGNALS:
                continue  # a time limit that fired as its task ended: the thread lives on

    def submit(self, work: Work) -> None:
        self._queue.put(work)

    def take_pending(self) -> list[Work]:
        pending: list[Work] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return pending
            if item is not _STOP:
                pending.append(item)  # type: ignore[arg-type]

    def stop(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread.is_alive():
                    thread.join()
