"""A prefork child: receives decoded jobs over its pipe, runs them, stores their results.

The child runs ``execute`` exactly as a pool thread would (result writes through its own
backend connection, callbacks, retries) and answers with a small summary the supervisor
needs to settle the message: the state, the return value, a ``Reject``, and whether the
child is about to retire (``max_tasks_per_child`` / ``max_memory_per_child``).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from caraway import signals, states
from caraway.exceptions import OperationalError, Reject, SoftTimeLimitExceeded
from caraway.execution import Outcome, coroutines, execute
from caraway.request import Context
from caraway.utils.einfo import ExceptionInfo
from caraway.worker.pools.channel import Channel

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")
#: prctl(2) option: the signal this process gets when its parent thread exits.
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildLimits:
    """When a child retires after a task: ``None`` means never."""

    max_tasks: int | None = None
    max_memory_kib: int | None = None


@dataclass(slots=True)
class Reply:
    """What the child sends back after a task."""

    state: str
    retval: Any  # the return value or exception (its repr when it cannot pickle)
    reject: tuple[str, bool] | None  # (reason, requeue)
    retiring: bool
    traceback: str | None = None  # of a FAILURE or RETRY
    #: The error the worker's own work around the task raised (a result the backend could not
    #: store, a callback it could not send): the supervisor settles the message as a pool
    #: thread would, instead of taking it for a lost child.
    internal: BaseException | None = None

    def __reduce__(self) -> tuple[type[Reply], tuple[Any, ...]]:
        # A plain tuple of fields: a slotted dataclass pickles through copyreg, 8x slower.
        fields = (self.state, self.retval, self.reject, self.retiring, self.traceback)
        return Reply, (*fields, self.internal)

    def outcome(self) -> Outcome:
        if self.internal is not None:
            raise self.internal
        reject = None if self.reject is None else Reject(self.reject[0], requeue=self.reject[1])
        einfo = None
        if self.traceback is not None and isinstance(self.retval, BaseException):
            einfo = ExceptionInfo.from_text(self.retval, self.traceback)
        return Outcome(self.state, self.retval, einfo, reject)


class Busy:
    """Whether a task body may be running: the soft-limit signal is ignored otherwise."""

    running = False


def child_main(
    app: Caraway, conn: Connection, limits: ChildLimits, index: int, logfile: str | None
) -> NoReturn:
    """The hand-off child's whole life: it runs the jobs the supervisor sends."""
    live_as_child(index, logfile, lambda: _serve(app, Channel(conn), limits))


def live_as_child(index: int, logfile: str | None, serve: Callable[[], object]) -> NoReturn:
    """A pool child's life around ``serve``; leaves with ``os._exit`` (never the parent's
    atexit hooks).

    ``index`` counts from 1 (Celery's ``%i``); ``logfile`` is this child's own log file.
    """
    code = 0
    try:
        multiprocessing.current_process().name = f"ForkPoolWorker-{index}"  # %(processName)s
        if logfile:
            log_to(logfile)
        die_with_parent()
        install_child_signals()
        signals.worker_process_init.send(sender=None)
        serve()
    except BaseException:
        logger.exception("Pool child %d failed", os.getpid())
        code = 1
    finally:
        try:
            signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=code)
            for handler in logging.getLogger().handlers:
                handler.flush()
        finally:
            os._exit(code)


def _serve(app: Caraway, conn: Channel, limits: ChildLimits) -> None:
    done = 0
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the supervisor is gone: nobody would read our answers
            return
        if message is None:
            return
        name, fields = message
        done += 1
        try:
            outcome: Outcome | Exception = _run(app, name, fields)
        except Exception as exc:  # task errors are outcomes: this failed around the task
            outcome = exc
        retiring = should_retire(done, limits)
        if isinstance(outcome, Exception):
            conn.send(_internal_reply(outcome, retiring))
        else:
            conn.send(_reply(outcome, retiring))
        if retiring:
            return


def _run(app: Caraway, name: str, fields: dict[str, Any]) -> Outcome:
    task = app.tasks[name]
    Busy.running = True
    try:
        return execute(task, Context(**fields))
    except SoftTimeLimitExceeded:
        # The signal landed after the body ended, while its result was being written.
        logger.warning("%s[%s]: soft time limit fired as it finished", name, fields.get("id"))
        return Outcome(states.SUCCESS, None)
    finally:
        Busy.running = False


def _reply(outcome: Outcome, retiring: bool) -> Reply:
    """The summary: the result is stored already; the value or exception still crosses the
    pipe (its repr when it cannot pickle) for the supervisor's events and dead-letter notes,
    with the traceback as text."""
    retval = outcome.retval
    try:
        pickle.dumps(retval)
    except Exception:
        retval = repr(retval)
    reject = outcome.reject
    summary = None if reject is None else (repr(reject.reason), bool(reject.requeue))
    traceback = outcome.einfo.traceback if outcome.einfo is not None else None
    return Reply(outcome.state, retval, summary, retiring, traceback)


def _internal_reply(exc: Exception, retiring: bool) -> Reply:
    """The error itself when it crosses the pipe, else an ``OperationalError`` saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = OperationalError(f"{type(exc).__name__}: {exc}")
    return Reply(states.FAILURE, None, None, retiring, None, exc)


def should_retire(done: int, limits: ChildLimits) -> bool:
    if limits.max_tasks and done >= limits.max_tasks:
        return True
    return bool(limits.max_memory_kib and resident_kib() > limits.max_memory_kib)


def resident_kib() -> int:
    """This process's resident memory now (Linux), else its peak (``ru_maxrss``)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def log_to(path: str) -> None:
    """``--logfile`` with ``%i``/``%I``: the file handlers the worker set up write here."""
    path = os.path.abspath(path)
    for logger_ in (logging.getLogger(), logging.getLogger("caraway.task")):
        for handler in list(logger_.handlers):
            if isinstance(handler, logging.FileHandler) and handler.baseFilename != path:
                moved = logging.FileHandler(path)
                moved.setFormatter(handler.formatter)
                moved.setLevel(handler.level)
                moved._caraway = getattr(handler, "_caraway", False)  # type: ignore[attr-defined]
                logger_.removeHandler(handler)  # the supervisor still writes to that file
                logger_.addHandler(moved)


def die_with_parent() -> None:
    """Linux: SIGKILL us when our parent dies, so no orphan runs a task the broker redelivers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # elsewhere the closed pipe ends the child after its current task
    if os.getppid() == 1:  # it died before prctl took effect
        os._exit(1)


def install_child_signals() -> None:
    """Ctrl-C goes to the supervisor, which decides; SIGTERM ends a child (``terminate``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, _on_soft_limit)


def _on_soft_limit(signum: int, frame: FrameType | None) -> None:
    if not Busy.running:
        return
    # An async body awaits on this thread's loop: cancel it at its await instead.
    if not coroutines.interrupt(threading.get_ident(), SoftTimeLimitExceeded):
        raise SoftTimeLimitExceeded()
