"""The current app and the current task, held in context variables.

Threads and asyncio tasks each see their own current task; the current app falls back to
the process default so code at import time (``shared_task``) finds one.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.task import Task

_current_app: ContextVar[Caraway | None] = ContextVar("caraway_current_app", default=None)
_current_task: ContextVar[Task[Any, Any] | None] = ContextVar("caraway_current_task", default=None)
_default_app: list[Caraway] = []
#: Every live app, for ``shared_task``; weak, as Celery's, so a dropped app is collected.
_all_apps: weakref.WeakSet[Caraway] = weakref.WeakSet()


def get_current_app() -> Caraway:
    """The app set as current, else the default one (created on first use)."""
    app = _current_app.get()
    if app is not None:
        return app
    if not _default_app:
        # Lazy, breaks the cycle current -> app -> current.
        from caraway.app import Caraway

        Caraway("default", set_as_current=False)._make_default()
    return _default_app[0]


def set_current_app(app: Caraway) -> None:
    _current_app.set(app)
    if not _default_app:
        _default_app.append(app)
    else:
        _default_app[0] = app


def set_default_app(app: Caraway) -> None:
    if _default_app:
        _default_app[0] = app
    else:
        _default_app.append(app)


def get_current_task() -> Task[Any, Any] | None:
    return _current_task.get()


def get_current_worker_task() -> Task[Any, Any] | None:
    """The task being executed by a worker (not an eager call), or None."""
    task = _current_task.get()
    if task is None:
        return None
    request = task.request
    return None if request.is_eager or request.called_directly else task


def push_task(task: Task[Any, Any] | None) -> Any:
    return _current_task.set(task)


def pop_task(token: Any) -> None:
    _current_task.reset(token)


class _Proxy:
    """Resolves to a value on each attribute access, like Celery's ``current_app`` proxy."""

    def __init__(self, resolve: Any) -> None:
        object.__setattr__(self, "_resolve", resolve)

    def _get_current_object(self) -> Any:
        return self._resolve()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._resolve(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __bool__(self) -> bool:
        return bool(self._resolve())

    def __eq__(self, other: object) -> bool:
        return bool(self._resolve() == other)

    def __hash__(self) -> int:
        return hash(self._resolve())

    def __repr__(self) -> str:
        return repr(self._resolve())


current_app: Caraway = _Proxy(get_current_app)  # type: ignore[assignment]
current_task: Task[Any, Any] = _Proxy(get_current_task)  # type: ignore[assignment]
