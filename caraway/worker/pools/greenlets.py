"""``-P gevent`` and ``-P eventlet``: up to ``-c`` tasks at once, each on its own greenlet
(``-c 500`` is normal).

For I/O-bound tasks. The ``caraway`` command patches the standard library first when it
sees ``-P gevent`` or ``-P eventlet`` (caraway.utils.green), so sockets (redis-py, py-amqp,
HTTP clients), ``time.sleep``, locks and the worker's own threads yield to one another:
hundreds of tasks wait on the network at once in one OS thread. Whatever blocks in C without
a patched call (CPU-bound code, SQLite queries, a C database driver not made cooperative)
holds every greenlet until it returns.

Time limits and ``revoke(terminate=True)`` throw into the task's greenlet, at its next
switch: a task waiting on a socket or in ``time.sleep`` is stopped at once (a thread would
finish that call first); a task spinning in pure Python or C code, never switching, is not.
The throw is scheduled on the hub, so the caller (a timer or remote-control greenlet) goes on.

``async def`` tasks run on an event loop of their greenlet's own. asyncio keeps one
"running loop" per OS thread, which all greenlets share: each loop here clears it while it
waits (and other greenlets run), so the loops of many tasks wait side by side.

Everything runs in one OS thread, so the bookkeeping here needs no lock.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib.util
import logging
import selectors
import sys
from abc import abstractmethod
from typing import Any

from caraway.exceptions import ImproperlyConfigured, MissingExtra
from caraway.execution import coroutines
from caraway.worker.pools.base import LATE_LIMIT_SIGNALS, Pool, PoolOptions, Work

logger = logging.getLogger("caraway.worker")


def _imported_library(name: str) -> bool:
    """Whether ``name`` was imported already (it must have been, to patch the process);
    ``MissingExtra`` with the pip command when it is not installed. Never imports it: a
    process that did not ask for it keeps its fork hooks and warnings (eventlet's)."""
    if name in sys.modules:
        return True
    if importlib.util.find_spec(name) is None:
        raise MissingExtra(f'the {name} pool needs {name}; run: pip install "caraway[{name}]"')
    return False


def _unpatched_error(pool: str, unpatched: list[str], patch_call: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"the {pool} pool needs the process monkey-patched before anything else is imported"
        f" (not patched: {', '.join(unpatched)}). Start the worker with -P {pool} on the command"
        f" line (`caraway -A proj worker -P {pool}`): the command patches first, which"
        " worker_pool in the configuration is read too late to do. In a program of your own,"
        f" call {patch_call} on its first line."
    )


@functools.cache
def _yielding_selector() -> type[selectors.BaseSelector]:
    """The selector class of greenlet-friendly loops, built once the process is patched
    (``DefaultSelector`` is the green library's then)."""

    class YieldingSelector(selectors.DefaultSelector):
        def select(self, timeout: float | None = None) -> Any:
            loop = asyncio._get_running_loop()
            asyncio._set_running_loop(None)  # other greenlets run meanwhile: not their loop
            try:
                return super().select(timeout)
            finally:
                asyncio._set_running_loop(loop)

    return YieldingSelector


def greenlet_loop() -> asyncio.AbstractEventLoop:
    """An event loop that lets the loops of other greenlets run while it waits."""
    return asyncio.SelectorEventLoop(_yielding_selector()())


class GreenPool(Pool):
    """The bookkeeping both libraries share; each subclass says how to spawn, find, throw
    into and join its greenlets."""

    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        self._pending: collections.deque[Work] = collections.deque()
        self._running: set[Any] = set()
        self._stopping = False

    @abstractmethod
    def _spawn(self, work: Work) -> Any:
        """Start a greenlet that runs ``self._run(work)``; returns it."""

    @abstractmethod
    def owner(self) -> Any:
        """The greenlet running the caller: what ``interrupt`` throws into."""

    @abstractmethod
    def interrupt(self, owner: Any, exc_type: type[BaseException]) -> bool:
        """Throw ``exc_type`` into ``owner`` at its next switch; False once it ended."""

    @abstractmethod
    def _join(self, greenlets: list[Any]) -> None:
        """Wait until every one of ``greenlets`` has ended."""

    def start(self) -> None:
        coroutines.use_loop_factory(greenlet_loop)

    def submit(self, work: Work) -> None:
        self._pending.append(work)
        self._fill()

    def _fill(self) -> None:
        """Start pending work while slots are free (spawning never switches greenlets)."""
        while self._pending and len(self._running) < self.limit and not self._stopping:
            self._running.add(self._spawn(self._pending.popleft()))

    def _run(self, work: Work) -> None:
        try:
            work()
        except LATE_LIMIT_SIGNALS:
            pass  # a time limit that fired as its task ended
        except Exception:
            # Work settles its own failures; one that escapes must not stop the pool.
            logger.exception("Pool greenlet: unexpected error; the pool goes on serving")
        finally:
            self._running.discard(self.owner())
            self._fill()

    def take_pending(self) -> list[Work]:
        pending = list(self._pending)
        self._pending.clear()
        return pending

    def grow(self, n: int) -> None:
        self.limit += max(0, n)
        self._fill()

    def shrink(self, n: int) -> None:
        """Run ``n`` fewer at once; running tasks finish, and no new one starts meanwhile."""
        self.limit -= min(max(0, n), self.limit - 1)

    def stop(self, wait: bool = True) -> None:
        """With ``wait``, run what is pending and let running tasks finish. Without, start
        nothing more: the process exits and takes running greenlets with it (a cold
        shutdown, as threads are left behind by the threads pool)."""
        if not wait:
            self._stopping = True
            return
        while self._running or self._pending:
            self._join(list(self._running))


class GeventPool(GreenPool):
    #: What must be patched: every worker thread is then a greenlet on the same hub.
    NEEDS_PATCHED = ("socket", "threading", "time")

    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        if not _imported_library("gevent"):
            raise _unpatched_error("gevent", list(self.NEEDS_PATCHED), "gevent.monkey.patch_all()")
        # Lazy, gevent is an optional extra, already imported by the patch (checked above).
        import gevent
        from gevent import monkey

        unpatched = [name for name in self.NEEDS_PATCHED if not monkey.is_module_patched(name)]
        if unpatched:
            raise _unpatched_error("gevent", unpatched, "gevent.monkey.patch_all()")
        self._gevent = gevent

    def _spawn(self, work: Work) -> Any:
        return self._gevent.spawn(self._run, work)

    def owner(self) -> Any:
        return self._gevent.getcurrent()

    def interrupt(self, owner: Any, exc_type: type[BaseException]) -> bool:
        if owner.dead:
            return False
        owner.kill(exc_type, block=False)  # thrown from the hub, at the greenlet's next switch
        return True

    def _join(self, greenlets: list[Any]) -> None:
        self._gevent.joinall(greenlets)


class EventletPool(GreenPool):
    #: What must be patched (eventlet's names): every worker thread is then a green thread.
    NEEDS_PATCHED = ("socket", "thread", "time")

    def __init__(self, limit: int, options: PoolOptions | None = None) -> None:
        super().__init__(limit, options)
        if not _imported_library("eventlet"):
            raise _unpatched_error("eventlet", list(self.NEEDS_PATCHED), "eventlet.monkey_patch()")
        # Lazy, eventlet is an optional extra, already imported by the patch (checked above).
        import eventlet
        from eventlet import greenthread, hubs, patcher

        unpatched = [name for name in self.NEEDS_PATCHED if not patcher.is_monkey_patched(name)]
        if unpatched:
            raise _unpatched_error("eventlet", unpatched, "eventlet.monkey_patch()")
        self._eventlet, self._greenthread, self._hubs = eventlet, greenthread, hubs

    def _spawn(self, work: Work) -> Any:
        return self._eventlet.spawn(self._run, work)

    def owner(self) -> Any:
        return self._greenthread.getcurrent()

    def interrupt(self, owner: Any, exc_type: type[BaseException]) -> bool:
        if owner.dead:
            return False
        self._hubs.get_hub().schedule_call_global(0, _throw, owner, exc_type)
        return True

    def _join(self, greenlets: list[Any]) -> None:
        for greenlet in greenlets:
            try:
                greenlet.wait()
            except Exception:  # _run logged it; waiting only needs it ended
                continue


def _throw(greenlet: Any, exc_type: type[BaseException]) -> None:
    """Run by eventlet's hub: throw into ``greenlet`` unless it ended meanwhile."""
    if not greenlet.dead:
        greenlet.throw(exc_type)
