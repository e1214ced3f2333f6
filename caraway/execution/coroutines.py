"""Running ``async def`` task bodies, and stopping them at their time limits.

Sync pools (solo, threads, each prefork child) give every thread one event loop, kept for
the thread's life: ``asyncio.run`` per task would pay for a new loop each time and close
connections pools the task keeps on the loop. The asyncio pool awaits bodies on its own loop.

Either way the body runs inside an ``Interruptible``: a time limit cancels the asyncio task
and the wrapper turns that cancellation into ``SoftTimeLimitExceeded`` raised at the body's
``await`` (so it can clean up), or, for the hard limit, lets the cancellation unwind the body
and reports ``TimeLimitExceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

_local = threading.local()
#: Makes each thread's loop; the gevent pool sets its own (see ``use_loop_factory``).
_loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
#: The body each owner (a thread id, or the asyncio task of a job) is awaiting now.
_running: dict[Any, Interruptible] = {}
#: Re-entrant: a prefork child interrupts from a signal handler on the same thread.
_running_lock = threading.RLock()


class Interruptible:
    """Awaits ``awaitable`` and can raise a time-limit exception inside it, from any thread."""

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self._awaitable = awaitable
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._pending: type[BaseException] | None = None
        self._done = False

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Raise ``exc_type`` in the body at its current ``await``; thread-safe."""
        self._loop.call_soon_threadsafe(self._interrupt_here, exc_type)

    def _interrupt_here(self, exc_type: type[BaseException]) -> None:
        if self._done or self._task is None or self._pending is not None:
            return
        self._pending = exc_type
        self._task.cancel()

    def __await__(self) -> Generator[Any, Any, Any]:
        self._task = asyncio.current_task()
        body = self._awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = body.send(value) if error is None else body.throw(error)
                except StopIteration as stop:
                    return stop.value
                except asyncio.CancelledError:
                    if self._pending is TimeLimitExceeded:
                        raise TimeLimitExceeded() from None
                    raise
                value, error = None, None
                try:
                    value = yield step
                except asyncio.CancelledError as cancelled:
                    error = self._translate(cancelled)
                except BaseException as exc:
                    error = exc
        finally:
            self._done = True

    def _translate(self, cancelled: asyncio.CancelledError) -> BaseException:
        """A soft limit becomes ``SoftTimeLimitExceeded`` in the body; anything else stays."""
        pending = self._pending
        if pending is None:
            return cancelled
        uncancel = getattr(self._task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()  # ours, not a cancellation the body should see as such
        if pending is SoftTimeLimitExceeded:
            self._pending = None  # the hard limit may still come
            return SoftTimeLimitExceeded()
        return cancelled  # hard limit: unwind the body; reported as TimeLimitExceeded


async def await_interruptibly(owner: Any, awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` so that ``interrupt(owner, ...)`` reaches it."""
    body = Interruptible(awaitable)
    with _running_lock:
        _running[owner] = body
    try:
        return await body
    finally:
        with _running_lock:
            _running.pop(owner, None)


def interrupt(owner: Any, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the body ``owner`` awaits; False when it awaits none."""
    with _running_lock:
        body = _running.get(owner)
    if body is None:
        return False
    body.interrupt(exc_type)
    return True


class _ThreadLoop:
    """Holds a thread's loop; closed when the thread ends and its locals are dropped."""

    def __init__(self) -> None:
        self.loop = _loop_factory()

    def __del__(self) -> None:
        if not self.loop.is_closed() and not self.loop.is_running():
            # Async generators first: clients kept for the loop's life close in theirs.
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


def use_loop_factory(factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Make the loops of threads that have none yet with ``factory``: a pool whose "threads"
    are greenlets needs loops that let the others run while they wait."""
    global _loop_factory
    _loop_factory = factory


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, created on first use and kept for later tasks."""
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _ThreadLoop()
    return holder.loop


def _forget_after_fork() -> None:
    """A forked child must not drive its parent's loop (they would share its epoll fd)."""
    _local.__dict__.clear()
    _running.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def run_in_thread_loop(awaitable: Awaitable[Any]) -> Any:
    """Run an ``async def`` body to its end on this thread's loop (sync pools, eager calls)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never awaited: close it rather than warn at collection
        raise RuntimeError(
            "an async task cannot be run synchronously inside a running event loop: "
            "await its body instead (e.g. `await task.run(...)`), or call it from a thread"
        )
    owner = threading.get_ident()
    return thread_loop().run_until_complete(await_interruptibly(owner, awaitable))
