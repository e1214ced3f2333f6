"""Errbacks (``link_error``): the two signatures Celery supports (docs/celery-wire.md §6.2).

An errback whose task takes ``(request, exc, traceback)`` runs here, in the failing worker;
any other, or one this worker does not know, is sent as a task with the failed task's id.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from caraway.canvas import group, maybe_signature

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.request import Context

logger = logging.getLogger("caraway.worker")


def call_errbacks(app: Caraway, request: Context, exc: BaseException, traceback: str | None) -> Any:
    """Run the new-style errbacks here and send the others, together as one group (as
    Celery does); that group's result, or None when none was sent."""
    sent: list[Any] = []
    for errback in request.errbacks or ():
        sig = maybe_signature(errback, app)
        try:
            target = sig.type
            if target is not None and _free_positional_arity(target.run, sig) > 1:
                sig(request, exc, traceback)
            else:
                sent.append(sig)
        except Exception:
            # The failure is stored already. Raising here would make it an internal error,
            # and the worker would redeliver an acks_late task again and again.
            logger.exception("Errback %r of %s[%s] raised", sig, request.task, request.id)
    if not sent:
        return None
    try:
        return group(sent, app=app).apply_async(
            (request.id,), parent_id=request.id, root_id=request.root_id or request.id
        )
    except Exception:
        logger.exception("Errbacks %r of %s[%s] could not be sent", sent, request.task, request.id)
        return None


def _free_positional_arity(fun: Any, sig: Any) -> int:
    """Positional parameters the errback's stored arguments leave open; more than one means
    ``(request, exc, traceback)``. So ``.s("label")`` of ``(task_id, label)`` is old-style."""
    arity = positional_arity(fun)
    if arity == 99:
        return arity
    bound_by_name = _positional_names(fun) & set(sig.kwargs)
    return arity - len(sig.args) - len(bound_by_name)


def _positional_names(fun: Any) -> set[str]:
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name for p in parameters if p.kind in kinds}


def positional_arity(fun: Any) -> int:
    try:
        parameters = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return 99
    return sum(1 for p in parameters if p.kind in kinds)
