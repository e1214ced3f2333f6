"""The app is loaded with Django, so ``shared_task`` declarations bind to it (Celery's layout)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
