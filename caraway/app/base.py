"""Celery's ``celery.app.base`` path: the app class (``from celery.app.base import Celery``)."""

from caraway.app import Caraway

#: Celery's name for it.
Celery = Caraway

__all__ = ["Celery"]
