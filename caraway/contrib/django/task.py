"""``DjangoTask``: tasks that wait for the current database transaction to commit.

A view that saves a row and sends a task about it inside ``transaction.atomic()`` risks a worker
running the task before the row is visible, or a rollback leaving a task about a row that never
existed. ``delay_on_commit`` hands the message to Django's ``transaction.on_commit``: it is sent
when the transaction commits, never if it rolls back, and at once outside a transaction. As in
Celery these return None: no task id exists until the message is sent.

Under ``DJANGO_SETTINGS_MODULE`` it is every app's default base task (caraway.contrib.django.fixup).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ParamSpec, TypeVar

from django.db import transaction

from caraway.task import Task

__all__ = ["DjangoTask"]

P = ParamSpec("P")
R = TypeVar("R")


class DjangoTask(Task[P, R]):
    """A ``Task`` with ``delay_on_commit`` and ``apply_async_on_commit``."""

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay(*args, **kwargs)`` once the current transaction commits."""
        transaction.on_commit(partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(
        self,
        args: Any = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """``apply_async(args, kwargs, **options)`` once the current transaction commits."""
        transaction.on_commit(partial(self.apply_async, args, kwargs, **options))
