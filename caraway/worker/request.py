"""``Task.Request``: a task's own request class, whose hooks the worker calls, as in Celery.

A task class names a subclass of ``Request`` (``Request = MyRequest``, or its dotted name
``"pkg.mod:MyRequest"``, or ``@app.task(Request=...)``) to hook into what happens to each of its
messages in the worker's own process (under prefork: the supervisor, not the child that ran
the task, so it sees a child killed at a hard time limit). The worker calls, with Celery's
arguments:

* ``on_accepted(pid, time_accepted)``: the pool started it (``pid``: the child's, under prefork;
  ``time_accepted``: ``time.monotonic()``);
* ``on_timeout(soft, timeout)``: its soft (``soft=True``) or hard time limit fired;
* ``on_success((failed, retval, runtime))``: the run ended. ``retval`` is the result's repr, or
  when ``failed`` (the task raised, retried, rejected or ignored its message) an
  ``ExceptionInfo``, which the base class passes to ``on_failure(retval, return_ok=True)``;
* ``on_failure(exc_info, send_failed_event=True, return_ok=False)``: it failed; called directly
  when the worker ended it (``WorkerLostError``, a hard ``TimeLimitExceeded`` under prefork,
  ``Terminated``). The base class passes a ``Retry`` on to ``on_retry(exc_info)``.

The worker acks, rejects and stores results itself, whatever the hooks do: an override may
call ``super()`` (harmless) but need not. ``Task.apply`` and eager mode build no worker
request, so the hooks are not called there (nor in Celery). Overriding what Celery's Request
also does as its worker's engine (``execute_using_pool``, ``acknowledge``, ...) is refused at
worker start, since caraway's worker would never call it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.exceptions import Ignore, ImproperlyConfigured, Retry
from caraway.protocol import _safe_repr
from caraway.utils.einfo import ExceptionInfo
from caraway.utils.imports import symbol_by_name

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.execution import Outcome
    from caraway.task import Task
    from caraway.worker.job import Job

logger = logging.getLogger("caraway.worker")

#: The hooks the worker calls.
HOOKS = ("on_accepted", "on_timeout", "on_success", "on_failure", "on_retry")
#: Methods of Celery's Request that run its worker's machinery; caraway's worker does that
#: work itself and would never call an override, so one is an error, not a silent no-op.
ENGINE_METHODS = (
    "execute_using_pool", "execute", "maybe_expire", "terminate", "cancel", "revoked",
    "send_event", "acknowledge", "reject", "on_ack", "on_reject", "info", "humaninfo",
)  # fmt: skip


class Request:
    """One message of a task, as its ``Request`` hooks see it in the worker."""

    #: ``os.getpid()`` of the process that runs it, and when it started (``time.time()``):
    #: set by ``on_accepted``.
    worker_pid: int | None = None
    time_start: float | None = None

    def __init__(self, job: Job) -> None:
        self._job = job
        self._accepted_at = 0.0

    # --- what the message says ----------------------------------------------------------------

    @property
    def task(self) -> Task[Any, Any]:
        return self._job.task

    @property
    def app(self) -> Caraway:
        return self._job.task.app

    @property
    def id(self) -> str:
        return self._job.id

    task_id = id

    @property
    def name(self) -> str:
        return self._job.name

    task_name = name
    type = name  # Celery's names for it too

    @property
    def args(self) -> Any:
        return self._job.request.args

    @property
    def kwargs(self) -> Any:
        return self._job.request.kwargs

    @property
    def hostname(self) -> str | None:
        return self._job.request.hostname

    @property
    def eta(self) -> datetime | None:
        return self._job.call.eta

    @property
    def expires(self) -> datetime | None:
        return self._job.call.expires

    @property
    def delivery_info(self) -> dict[str, Any]:
        return self._job.request.delivery_info or {}

    @property
    def request_dict(self) -> dict[str, Any]:
        """The task's request fields (``self.request`` inside the task)."""
        return self._job.request.as_dict()

    @property
    def time_limits(self) -> tuple[float | None, float | None]:
        """``(hard, soft)`` in seconds, as in the message's ``timelimit`` header."""
        return self._job.time_limit, self._job.soft_time_limit

    @property
    def correlation_id(self) -> str | None:
        return self._job.request.correlation_id

    @property
    def root_id(self) -> str | None:
        return self._job.request.root_id

    @property
    def parent_id(self) -> str | None:
        return self._job.request.parent_id

    @property
    def group(self) -> str | None:
        return self._job.request.group

    @property
    def group_index(self) -> int | None:
        return self._job.request.group_index

    @property
    def chord(self) -> Any:
        return self._job.request.chord

    @property
    def reply_to(self) -> str | None:
        return self._job.request.reply_to

    @property
    def ignore_result(self) -> bool:
        return bool(self._job.call.ignore_result)

    # --- hooks: override in a subclass ---------------------------------------------------------

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        """The pool started the task (``time_accepted``: ``time.monotonic()``)."""
        self.worker_pid = pid
        self.time_start = time.time() - (time.monotonic() - time_accepted)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """A time limit fired; the worker has logged it (and, if hard, fails the task)."""

    def on_success(self, failed__retval__runtime: tuple[bool, Any, float], **kwargs: Any) -> None:
        """The run ended; a failed one goes on to ``on_failure``."""
        failed, retval, _runtime = failed__retval__runtime
        if failed:
            self.on_failure(retval, return_ok=True)

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        """The task failed (or retried, rejected or ignored its message: see ``exc_info``)."""
        if isinstance(exc_info.exception, Retry):
            self.on_retry(exc_info)

    def on_retry(self, exc_info: ExceptionInfo) -> None:
        """The task raised ``Retry`` (``exc_info.exception``); its new message is sent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}[{self.id}]>"


def request_class(task: Task[Any, Any]) -> type[Request] | None:
    """The task's own ``Request`` subclass; None when it has none (no hooks to call).

    Raises ``ImproperlyConfigured`` when it cannot be honoured.
    """
    cls = getattr(task, "Request", Request)
    try:
        cls = symbol_by_name(cls)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"task {task.name!r}: cannot import its Request {cls!r}: {exc}"
        ) from exc
    if cls is Request:
        return None
    if not (isinstance(cls, type) and issubclass(cls, Request)):
        raise ImproperlyConfigured(
            f"task {task.name!r}: its Request {cls!r} is not a subclass of"
            " caraway.worker.request.Request (write `from caraway.worker.request import"
            " Request` where Celery's code imports celery.worker.request)"
        )
    _refuse_engine_overrides(task, cls)
    return cls


def _refuse_engine_overrides(task: Task[Any, Any], cls: type[Request]) -> None:
    own = cls.__mro__[: cls.__mro__.index(Request)]
    overridden = sorted({name for klass in own for name in ENGINE_METHODS if name in vars(klass)})
    if overridden:
        raise ImproperlyConfigured(
            f"task {task.name!r}: {cls.__qualname__} overrides {', '.join(overridden)}, which"
            " caraway's worker never calls (it runs, acks and revokes tasks itself). Only"
            f" these Request hooks are called: {', '.join(HOOKS)}."
        )


# --- the worker's side ------------------------------------------------------------------------


def accepted(hooks: Request, pid: int) -> None:
    """The pool started the job: ``on_accepted``."""
    hooks._accepted_at = now = time.monotonic()
    _call(hooks, "on_accepted", pid, now)


def timed_out(hooks: Request, soft: bool, timeout: float) -> None:
    _call(hooks, "on_timeout", soft, timeout)


def finished(hooks: Request, outcome: Outcome) -> None:
    """The run ended with ``outcome``: ``on_success`` (failed or not), or ``on_failure``
    when the worker ended it."""
    if outcome.ended_by is not None:
        _call(hooks, "on_failure", ExceptionInfo(outcome.ended_by))
        return
    runtime = time.monotonic() - hooks._accepted_at
    if outcome.state == states.SUCCESS:
        _call(hooks, "on_success", (False, _safe_repr(outcome.retval), runtime))
    else:
        _call(hooks, "on_success", (True, _exception_info(outcome), runtime))


def _exception_info(outcome: Outcome) -> ExceptionInfo:
    """What the task raised; for a retry the ``Retry`` itself (``.exc`` is the reason)."""
    retval = outcome.retval
    if outcome.state == states.IGNORED:
        retval = Ignore()
    elif not isinstance(retval, BaseException):  # a prefork child's repr of an unpicklable one
        retval = Exception(retval)
    if outcome.einfo is None:
        return ExceptionInfo(retval)
    return ExceptionInfo.from_text(retval, outcome.einfo.traceback)


def _call(hooks: Request, name: str, *args: Any) -> None:
    """A hook's error is logged: the message is settled whatever the hook does."""
    try:
        getattr(hooks, name)(*args)
    except Exception:
        logger.exception("%r: its %s raised", hooks, name)
