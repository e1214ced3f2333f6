"""Celery's ``celery.app.registry`` path: the registry behind ``app.tasks``."""

from caraway.registry import TaskRegistry

__all__ = ["TaskRegistry"]
