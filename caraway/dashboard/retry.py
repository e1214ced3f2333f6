"""*Retry now*: send a task again, as a new task with the same name, arguments and queue.

The arguments come from the result backend when it keeps them (``result_extended``): the
real values. Otherwise from the task's events, which carry reprs: they are read back when
they are plain literals (numbers, strings, lists, dicts...), and anything else is refused
rather than guessed, since a retry with other arguments would be a different task.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

from caraway.exceptions import CarawayError

if TYPE_CHECKING:
    from caraway.app import Caraway


class CannotRetry(Exception):
    """The task cannot be sent again as it was; the message says why."""


def _stored_call(app: Caraway, task_id: str) -> dict[str, Any] | None:
    """The backend's extended meta (name, args, kwargs, queue) when it keeps them."""
    try:
        meta = app.backend.get_task_meta(task_id)
    except (CarawayError, NotImplementedError):  # no backend, or it is away: use the events
        return None
    if meta.get("name") and isinstance(meta.get("args"), list | tuple):
        return meta
    return None


def _literal(text: str | None, kinds: tuple[type, ...], what: str) -> Any:
    if not text:
        return kinds[0]()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise CannotRetry(
            f"its {what} {text!r} are not plain values the dashboard can send again"
            " (set result_extended = True to keep the real ones with results)"
        ) from None
    if not isinstance(value, kinds):
        raise CannotRetry(f"its {what} {text!r} are not a {kinds[0].__name__}")
    return value


def known_queue(task: dict[str, Any]) -> str:
    """The queue ``task`` was sent to, when its ``task-sent`` event said ("" otherwise:
    workers' events do not name it)."""
    return str(task.get("queue") or task.get("routing_key") or "")


def retry_now(app: Caraway, task: dict[str, Any], queue: str = "") -> str:
    """Send ``task`` (a row of the dashboard's store) again now, to ``queue`` when given,
    else to the queue it was known to go to, else where the app's routes send it; returns
    the new task's id."""
    stored = _stored_call(app, task["uuid"])
    if stored is not None:
        name, args, kwargs = stored["name"], tuple(stored["args"]), dict(stored["kwargs"] or {})
        queue = queue or stored.get("queue") or known_queue(task)
    else:
        name = task.get("name")
        if not name:
            raise CannotRetry("its name is not known yet (no event named it)")
        args = tuple(_literal(task.get("args"), (tuple, list), "args"))
        kwargs = _literal(task.get("kwargs"), (dict,), "kwargs")
        queue = queue or known_queue(task)
    options: dict[str, Any] = {"queue": queue} if queue else {}
    return str(app.send_task(name, args=args, kwargs=kwargs, **options).id)
