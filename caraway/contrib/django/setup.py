"""Django made ready for the ORM in a process caraway started (a bare ``caraway beat``), and
database errors translated at the boundary into caraway's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import django
from django import db
from django.apps import apps
from django.conf import settings

from caraway.exceptions import ImproperlyConfigured, OperationalError, Unreachable
from caraway.utils.text import truncate

APP = "caraway.contrib.django"


def ensure_django() -> None:
    """Set Django up unless this process did already; the app must be installed."""
    if not apps.ready:
        if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
            raise ImproperlyConfigured(
                "the Django database needs Django's settings: set DJANGO_SETTINGS_MODULE "
                "(e.g. in proj/celery.py, as Celery's Django guide does)"
            )
        django.setup()
    if not apps.is_installed(APP):
        raise ImproperlyConfigured(
            f"add {APP!r} to INSTALLED_APPS (and run 'manage.py migrate') to keep results or "
            "periodic tasks in the Django database"
        )


@contextmanager
def translated(what: str, alias: str) -> Iterator[None]:
    """Django's database errors leave as :class:`Unreachable` (the server is away: try again
    later) or :class:`OperationalError`; a broken connection is closed so the next use of
    this thread's connection opens a fresh one."""
    try:
        yield
    except (db.OperationalError, db.InterfaceError) as exc:
        db.connections[alias].close_if_unusable_or_obsolete()
        raise Unreachable(f"{what}: {type(exc).__name__}: {_detail(exc)}") from exc
    except db.DatabaseError as exc:
        raise OperationalError(f"{what}: {type(exc).__name__}: {_detail(exc)}") from exc


def _detail(exc: BaseException) -> str:
    return truncate(str(exc).strip(), 500)
