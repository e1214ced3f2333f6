"""Celery's ``celery.app.log`` path: the formatter of task log lines (``%(task_name)s``,
``%(task_id)s``), for logging configurations that name it."""

from caraway.utils.log import TaskFormatter

__all__ = ["TaskFormatter"]
