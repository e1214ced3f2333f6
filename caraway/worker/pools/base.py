"""The pool contract."""

from __future__ import annotations

import ctypes
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

Work = Callable[[], Any]
#: What a time limit raises in a pool thread; one may land just after its task ended.
LATE_LIMIT_SIGNALS = (SoftTimeLimitExceeded, TimeLimitExceeded)


class Pool(ABC):
    """Runs jobs; ``limit`` is how many run at once."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)

    def start(self) -> None:  # noqa: B027 - solo has nothing to start
        """Start the threads or processes that run jobs."""

    @abstractmethod
    def submit(self, work: Work) -> None:
        """Run ``work`` (now, or when a slot frees)."""

    def take_pending(self) -> list[Work]:
        """Remove and return work not started yet (given back on a warm shutdown)."""
        return []

    def stop(self, wait: bool = True) -> None:  # noqa: B027 - solo has nothing to stop
        """Stop accepting work; with ``wait``, let running work finish."""


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
