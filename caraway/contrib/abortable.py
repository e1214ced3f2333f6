"""Tasks that a client can ask to stop: Celery's ``celery.contrib.abortable``, same names.

The client calls ``AbortableAsyncResult(task_id).abort()``, which stores the state
``ABORTED`` in the result backend; the task polls ``self.is_aborted()`` at points where it is
safe to stop and returns early. Nothing is interrupted by force, so it needs a result
backend and a task that looks. The task's own return value then replaces ``ABORTED``.
"""

from __future__ import annotations

from typing import Any

from caraway.result import AsyncResult
from caraway.task import Task

__all__ = ["ABORTED", "AbortableAsyncResult", "AbortableTask"]

#: The state ``abort()`` stores: neither ready nor a failure, so ``get()`` keeps waiting.
ABORTED = "ABORTED"


class AbortableAsyncResult(AsyncResult[Any]):
    """An ``AsyncResult`` that can ask its running task to stop."""

    def is_aborted(self) -> bool:
        return self.state == ABORTED

    def abort(self) -> None:
        """Ask the task to stop: it sees ``is_aborted()`` true at its next check."""
        self.backend.store_result(self.id, None, ABORTED)


class AbortableTask(Task[Any, Any]):
    """Base class (``@app.task(bind=True, base=AbortableTask)``) of tasks that check
    ``self.is_aborted()`` while they run."""

    abstract = True

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AbortableAsyncResult:
        return AbortableAsyncResult(task_id, task_name=self.name, app=self.app, **kwargs)

    def is_aborted(self, task_id: str | None = None) -> bool:
        """Whether a client called ``abort()`` for ``task_id`` (default: the current call)."""
        task_id = task_id or self.request.id
        if task_id is None:
            return False
        return self.AsyncResult(task_id).is_aborted()
