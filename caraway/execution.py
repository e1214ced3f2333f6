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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caraway import signals, states
from caraway.canvas import maybe_signature
from caraway.current import pop_task, push_task
from caraway.exceptions import Ignore, Reject, Retry
from caraway.request import Context
from caraway.utils.einfo import ExceptionInfo

if TYPE_CHECKING:
    from caraway.result import EagerResult
    from caraway.task import Task

logger = logging.getLogger("caraway.worker")


@dataclass(slots=True)
class Outcome:
    """How a call ended: its state, return value (or exception) and traceback."""

    state: str
    retval: Any
    einfo: ExceptionInfo | None = None
    reject: Reject | None = None


def _option(task: Task[Any, Any], name: str, setting: str) -> Any:
    value = getattr(task, name)
    return task.app.conf[setting] if value is None else value


def execute(task: Task[Any, Any], request: Context, store: bool = True) -> Outcome:
    """Run ``task`` for ``request`` and record the outcome; never raises for task errors."""
    args, kwargs, task_id = list(request.args or ()), dict(request.kwargs or {}), request.id
    assert task_id is not None
    signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs)
    task_token = push_task(task)
    request_token = task.push_request(request)
    try:
        if store and _option(task, "track_started", "task_track_started"):
            task.backend.mark_as_started(
                task_id, request, pid=os.getpid(), hostname=request.hostname
            )
        outcome = _run(task, request, args, kwargs, store)
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
    return outcome


def _run(
    task: Task[Any, Any], request: Context, args: list[Any], kwargs: dict[str, Any], store: bool
) -> Outcome:
    task_id = str(request.id)
    started = time.monotonic()
    try:
        task.before_start(task_id, tuple(args), kwargs)
        retval = task.run(*args, **kwargs)
    except Ignore:
        return Outcome(states.IGNORED, None)
    except Reject as exc:
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
        task.backend.mark_as_done(task_id, retval, request)
    task.on_success(retval, task_id, tuple(request.args or ()), dict(request.kwargs or {}))
    signals.task_success.send(sender=task, result=retval)
    return Outcome(states.SUCCESS, retval)


def _on_failure(task: Task[Any, Any], request: Context, exc: Exception, store: bool) -> Outcome:
    task_id = str(request.id)
    einfo = ExceptionInfo(exc)
    keep_errors = _option(task, "store_errors_even_if_ignored", "task_store_errors_even_if_ignored")
    if store and (keep_errors or not _ignores_result(task, request)):
        task.backend.mark_as_failure(task_id, exc, einfo.traceback, request)
    _call_errbacks(task, request, exc, einfo)
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


def _call_errbacks(
    task: Task[Any, Any], request: Context, exc: Exception, einfo: ExceptionInfo
) -> None:
    """Errbacks taking ``(request, exc, traceback)`` run here; others are sent the task id."""
    for errback in request.errbacks or ():
        sig = maybe_signature(errback, task.app)
        try:
            target = sig.type
            if target is not None and _positional_arity(target.run) > 1:
                sig(request, exc, einfo.traceback)
            else:
                sig.apply_async((request.id,))
        except Exception:
            # The failure is stored already. Raising here would make it an internal error,
            # and the worker would redeliver an acks_late task again and again.
            logger.exception("Errback %r of %s[%s] raised", sig, task.name, request.id)


def _positional_arity(fun: Any) -> int:
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 99
    return sum(1 for p in parameters if p.kind in kinds)


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
    from caraway.current import get_current_worker_task
    from caraway.result import EagerResult

    task_id = task_id or str(uuid.uuid4())
    parent = get_current_worker_task()
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
