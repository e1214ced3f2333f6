"""Celery's ``celery.app.task`` path: the task base class and the request context."""

from caraway.request import Context
from caraway.task import Task

__all__ = ["Context", "Task"]
