"""Celery's ``celery.app.events`` path: what ``app.events`` is (Receiver, Dispatcher, State)."""

from caraway.events.app_events import Events

__all__ = ["Events"]
