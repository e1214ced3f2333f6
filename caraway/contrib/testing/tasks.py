"""Tasks the testing helpers rely on: ``ping``, which ``start_worker`` sends as its check.

Import it as Celery's tests do (``from caraway.contrib.testing.tasks import ping``) and
``ping.delay().get()`` answers ``'pong'`` from any running worker of the current app.
"""

from __future__ import annotations

from caraway.app import shared_task

__all__ = ["ping"]


@shared_task(name="celery.ping")  # type: ignore[untyped-decorator]  # shared_task is untyped
def ping() -> str:
    """Answer ``'pong'``: proves a worker takes messages and stores results."""
    return "pong"
