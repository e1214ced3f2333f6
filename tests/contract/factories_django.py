"""The ``django-db`` result backend and the Django beat store, for the contract suites.

Django's settings hold for a whole process, so these engines join the suites only in a
pytest process started by ``test_django_contract.py``, which names the database in
``CARAWAY_CONTRACT_DJANGO`` (``sqlite:<path>`` or ``postgresql:<database>``); the tables are
made by the app's own migrations, and emptied after each test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ENV = "CARAWAY_CONTRACT_DJANGO"


def set_up() -> bool:
    """Configure Django for this process (once), migrate; False when not asked to."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    import django
    from django.conf import settings
    from django.core.management import call_command

    if not settings.configured:
        kind, _, name = spec.partition(":")
        database: dict[str, Any] = (
            {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
            if kind == "sqlite"
            else {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "postgres",
                  "HOST": "127.0.0.1", "PORT": 5432}
        )  # fmt: skip
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                            "caraway.contrib.django"],
            DATABASES={"default": database}, USE_TZ=True,
        )  # fmt: skip
        django.setup()
        call_command("migrate", verbosity=0)
    return True


def empty_tables() -> None:
    from caraway.contrib.django import models

    for model in (models.TaskResult, models.GroupResult, models.ResultCounter,
                  models.PeriodicTask, models.IntervalSchedule, models.BeatLease,
                  models.BeatRun, models.ScheduleChange):  # fmt: skip
        model.objects.all().delete()


@contextmanager
def _django_backend(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        yield "django-db", {}
    finally:
        empty_tables()


def beat_store_factory(stack: ExitStack) -> Callable[[], Any]:
    """``make()`` for the beat store suite: each store as a separate beat's app opens it."""
    from caraway import Celery
    from caraway.beat.stores import store_for_app
    from caraway.contrib.django.beat_store import DjangoStore

    stack.callback(empty_tables)

    def make() -> Any:
        app = Celery(f"beat-{uuid.uuid4().hex[:6]}", broker="memory://", backend="django-db",
                     set_as_current=False)  # fmt: skip
        stack.callback(app.close)
        store = store_for_app(app)
        assert isinstance(store, DjangoStore)
        return store

    return make


BACKENDS = {"django": _django_backend} if set_up() else {}
