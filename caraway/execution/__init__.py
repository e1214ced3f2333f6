"""Running one task call: state transitions, hooks, signals, retries, results and callbacks.

The worker and ``Task.apply`` (eager mode) share this, so a task behaves the same both ways.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caraway import signals, states
from caraway.canvas import maybe_signature
from caraway.canvas.chords import count_group_success, on_part_return, propagate_chain_failure
from caraway.current import get_current_task, pop_task, push_task
from caraway.exceptions import EncodeError, Ignore, Reject, Retry
from caraway.execution.coroutines import await_interruptibly, run_in_thread_loop
from caraway.execution.errbacks import call_errbacks
from caraway.request import Context
from caraway.result import AsyncResult, EagerResult, GroupResult
from caraway.task import BASE_CALL, call_overridden
from caraway.tracing import running, tracer_for
from caraway.utils.einfo import ExceptionInfo

if TYPE_CHECKING:
    from caraway.result import AsyncResult, EagerResult, GroupResult
    from caraway.task import Task

logger = logging.getLogger("caraway.worker")


@dataclass(slots=True)
class Outcome:
    """How a call ended: its state, return value (or exception) and traceback."""

    state: str
    retval: Any
    einfo: ExceptionInfo | None = None
    reject: Reject | None = None
    #: Why the worker, not the task, ended the run (a lost child, a hard limit, terminate).
    ended_by: BaseException | None = None


def _option(task: Task[Any, Any], name: str, setting: str) -> Any:
    value = getattr(task, name)
    return getattr(task.app.conf, setting) if value is None else value


#: The steps of one call: they yield the awaitable an ``async def`` body returned, and are
#: sent its value (or thrown its exception), so sync and async drivers share every step.
Steps = Generator[Awaitable[Any], Any, Outcome]


def execute(task: Task[Any, Any], request: Context, store: bool = True) -> Outcome:
    """Run ``task`` for ``request`` and record the outcome; never raises for task errors.

    An ``async def`` body runs to its end on this thread's own event loop.
    """
    steps = execution_steps(task, request, store)
    try:
        awaitable = next(steps)
        while True:
            try:
                value = run_in_thread_loop(awaitable)
            except BaseException as exc:
                awaitable = steps.throw(exc)
            else:
                awaitable = steps.send(value)
    except StopIteration as stop:
        outcome: Outcome = stop.value
        return outcome


async def execute_async(task: Task[Any, Any], request: Context, owner: Any) -> Outcome:
    """``execute`` on a running loop; ``coroutines.interrupt(owner, ...)`` reaches the body."""
    steps = execution_steps(task, request, store=True)
    try:
        awaitable = next(steps)
        while True:
            try:
                value = await await_interruptibly(owner, awaitable)
            except BaseException as exc:
                awaitable = steps.throw(exc)
            else:
                awaitable = steps.send(value)
    except StopIteration as stop:
        outcome: Outcome = stop.value
        return outcome


def execution_steps(task: Task[Any, Any], request: Context, store: bool) -> Steps:
    """Everything around the body: prerun, started state, the body, hooks, postrun; in a
    span when the app traces (eager calls have no sender's span to continue)."""
    tracer = None if request.is_eager else tracer_for(task.app)
    if tracer is None:
        return (yield from _steps(task, request, store))
    return (yield from running(tracer, request, _steps(task, request, store)))


def _steps(task: Task[Any, Any], request: Context, store: bool) -> Steps:
    args, kwargs, task_id = list(request.args or ()), dict(request.kwargs or {}), request.id
    assert task_id is not None
    pending: list[Awaitable[Any]] = []  # what async signal receivers returned
    collecting = signals.collect_awaitables(pending)
    try:
        signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs)
        yield from _await_receivers(pending)
        task_token = push_task(task)
        request_token = task.push_request(request)
        try:
            if store and _option(task, "track_started", "task_track_started"):
                task.backend.mark_as_started(
                    task_id, request, pid=os.getpid(), hostname=request.hostname
                )
            outcome = yield from _run(task, request, args, kwargs, store)
            yield from _await_receivers(pending)  # task_success, task_failure, task_retry
            task.after_return(
                outcome.state, outcome.retval, task_id, tuple(args), kwargs, outcome.einfo
            )
        finally:
            task.pop_request(request_token)
            pop_task(task_token)
        signals.task_postrun.send(
            sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs,
            retval=outcome.retval, state=outcome.state,
        )  # fmt: skip
        yield from _await_receivers(pending)
    finally:
        signals.stop_collecting(collecting)
    return outcome


def _await_receivers(pending: list[Awaitable[Any]]) -> Generator[Awaitable[Any], Any, None]:
    """Await what ``async def`` signal receivers returned; their errors are only logged."""
    while pending:
        awaitable = pending.pop(0)
        try:
            yield awaitable
        except Exception:
            logger.exception("An async signal receiver raised")


def _run(
    task: Task[Any, Any], request: Context, args: list[Any], kwargs: dict[str, Any], store: bool
) -> Steps:
    task_id = str(request.id)
    started = time.monotonic()
    try:
        task.before_start(task_id, tuple(args), kwargs)
        if type(task).__call__ is BASE_CALL:  # not overridden: nothing between us and run
            retval = task.run(*args, **kwargs)
        else:
            retval = call_overridden(task, request, args, kwargs)
        if inspect.isawaitable(retval):
            retval = yield retval
    except Ignore:
        return Outcome(states.IGNORED, None)
    except Reject as exc:
        if not exc.requeue:
            _on_final_reject(task, request, exc, store)
        return Outcome(states.REJECTED, exc, reject=exc)
    except Retry as exc:
        return _on_retry(task, request, exc, store)
    except Exception as exc:
        return _on_failure(task, request, exc, store)
    outcome = _on_success(task, request, retval, store)
    if not request.is_eager and logger.isEnabledFor(logging.INFO):
        runtime = time.monotonic() - started
        logger.info("Task %s[%s] succeeded in %.6fs: %r", task.name, task_id, runtime, retval)
    return outcome


def _ignores_result(task: Task[Any, Any], request: Context) -> bool:
    return bool(request.ignore_result or _option(task, "ignore_result", "task_ignore_result"))


def _stores_errors(task: Task[Any, Any], request: Context) -> bool:
    keep_errors = _option(task, "store_errors_even_if_ignored", "task_store_errors_even_if_ignored")
    return bool(keep_errors) or not _ignores_result(task, request)


def _on_success(task: Task[Any, Any], request: Context, retval: Any, store: bool) -> Outcome:
    task_id = str(request.id)
    for callback in request.callbacks or ():
        sig = maybe_signature(callback, task.app)
        sig.apply_async(() if sig.immutable else (retval,))
    if request.chain:
        rest = list(request.chain)
        following = maybe_signature(rest.pop(), task.app)
        following.apply_async(() if following.immutable else (retval,), chain=rest)
    if store and not _ignores_result(task, request):
        try:
            task.backend.mark_as_done(task_id, _storable(retval), request)
        except EncodeError as exc:  # a value the result serializer cannot carry: the task
            return _on_failure(task, request, exc, store)  # fails, as in Celery
    if request.group and not request.is_eager:
        if request.group_index is not None:  # a member, not a chord body sharing the id
            count_group_success(task.app, request)
        if request.chord:
            on_part_return(task.app, request, states.SUCCESS, retval)
    task.on_success(retval, task_id, tuple(request.args or ()), dict(request.kwargs or {}))
    signals.task_success.send(sender=task, result=retval)
    return Outcome(states.SUCCESS, retval)


def _storable(retval: Any) -> Any:
    """A task that returns a result object (a canvas it started) stores its id tree, as
    Celery does: the object itself has no serialized form."""
    if isinstance(retval, AsyncResult | GroupResult):
        return retval.as_tuple()
    return retval


def _on_failure(task: Task[Any, Any], request: Context, exc: Exception, store: bool) -> Outcome:
    task_id = str(request.id)
    einfo = ExceptionInfo(exc)
    if store and _stores_errors(task, request):
        task.backend.mark_as_failure(task_id, exc, einfo.traceback, request)
    if not request.is_eager:
        _fail_workflow(task, request, exc, einfo.traceback)
    call_errbacks(task.app, request, exc, einfo.traceback)
    args, kwargs = tuple(request.args or ()), dict(request.kwargs or {})
    task.on_failure(exc, task_id, args, kwargs, einfo)
    signals.task_failure.send(
        sender=task, task_id=task_id, exception=exc, args=args, kwargs=kwargs,
        traceback=exc.__traceback__, einfo=einfo,
    )  # fmt: skip
    if not request.is_eager:
        logger.error(
            "Task %s[%s] raised unexpected: %r\n%s", task.name, task_id, exc, einfo.traceback
        )
    return Outcome(states.FAILURE, exc, einfo)


def _on_final_reject(task: Task[Any, Any], request: Context, exc: Reject, store: bool) -> None:
    """A message rejected for good never runs again: its result becomes a FAILURE, with the
    ``task_failure`` signal, so no caller waits on a PENDING result for ever (Celery 5.7)."""
    einfo = ExceptionInfo(exc)
    if store and _stores_errors(task, request):
        task.backend.mark_as_failure(str(request.id), exc, einfo.traceback, request)
    signals.task_failure.send(
        sender=task, task_id=request.id, exception=exc, args=tuple(request.args or ()),
        kwargs=dict(request.kwargs or {}), traceback=exc.__traceback__, einfo=einfo,
    )  # fmt: skip


def _fail_workflow(task: Task[Any, Any], request: Context, exc: Exception, text: str) -> None:
    """The rest of a chain fails with this task; a chord header part fails its chord."""
    try:
        if request.chain:
            propagate_chain_failure(task.app, request, exc, text)
        if request.chord:
            on_part_return(task.app, request, states.FAILURE, exc)
    except Exception:
        logger.exception("Could not fail the workflow of %s[%s]", task.name, request.id)


def _on_retry(task: Task[Any, Any], request: Context, signal: Retry, store: bool) -> Outcome:
    task_id = str(request.id)
    reason = signal.exc if isinstance(signal.exc, BaseException) else signal
    einfo = ExceptionInfo(reason if reason.__traceback__ else signal)
    if store and not request.is_eager:
        task.backend.mark_as_retry(task_id, reason, einfo.traceback, request)
    args, kwargs = tuple(request.args or ()), dict(request.kwargs or {})
    task.on_retry(reason, task_id, args, kwargs, einfo)
    signals.task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)
    if not request.is_eager:
        logger.info("Task %s[%s] retry: %s", task.name, task_id, signal)
    return Outcome(states.RETRY, signal, einfo)


def run_eagerly(
    task: Task[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    task_id: str | None,
    retries: int,
    link: Any,
    link_error: Any,
    throw: bool,
    options: dict[str, Any],
) -> EagerResult[Any]:
    """``Task.apply``: run here as a worker would; a retry runs again at once."""

    task_id = task_id or str(uuid.uuid4())
    # Any running task is the parent, an eager one too: apply() inside apply() (Celery).
    parent = get_current_task()
    if parent is not None and parent.request.called_directly:
        parent = None
    request = Context(
        id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries, is_eager=True,
        called_directly=False, delivery_info={"is_eager": True}, hostname=socket.gethostname(),
        callbacks=_as_list(link), errbacks=_as_list(link_error),
        root_id=parent.request.root_id if parent else task_id,
        parent_id=parent.request.id if parent else None,
        headers=options.get("headers"), ignore_result=bool(options.get("ignore_result")),
    )  # fmt: skip
    store = bool(_option(task, "store_eager_result", "task_store_eager_result"))
    outcome = execute(task, request, store=store)
    if isinstance(outcome.retval, Retry) and outcome.retval.sig is not None:
        sig = outcome.retval.sig
        return run_eagerly(
            task, sig.args, sig.kwargs, task_id=task_id, retries=retries + 1, link=link,
            link_error=link_error, throw=throw, options=options,
        )  # fmt: skip
    if throw and outcome.state == states.FAILURE:
        raise outcome.retval
    traceback = outcome.einfo.traceback if outcome.einfo else None
    return EagerResult(task_id, outcome.retval, outcome.state, traceback, task.name, task.app)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list | tuple) else [value]
