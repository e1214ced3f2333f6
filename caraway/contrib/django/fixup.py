"""What a Django project gets by itself once ``DJANGO_SETTINGS_MODULE`` is set.

Every app calls ``fixup`` (``caraway.app.BUILTIN_FIXUPS``). In a Django project (the variable
set, Django importable) the app then:

- takes ``DjangoTask`` as its default base task (``delay_on_commit``), unless given a
  ``task_cls``;
- searches every installed app for a ``tasks`` module on ``autodiscover_tasks()``;
- sets Django up before a worker or beat imports task modules, so tasks that use models import
  without ``AppRegistryNotReady``.

A worker also keeps its database connections healthy, as Django does around each request: stale
or broken connections are closed before and after every task (``close_old_connections``,
honouring ``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS``), so a long-lived worker survives a
database restart; and a prefork child lets go of the connections it inherited without a word on
them, because they are its parent's sockets. Connections are per thread in Django, and the
task signals fire in the thread that runs the task, so this holds on every pool.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.exceptions import CarawayWarning
from caraway.utils.pid import after_fork_in_child

if TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = ["DjangoFixup", "fixup"]

logger = logging.getLogger("caraway.contrib.django")

SETTINGS_VARIABLE = "DJANGO_SETTINGS_MODULE"
TASK_CLS = "caraway.contrib.django.task:DjangoTask"


def fixup(app: Caraway, variable: str = SETTINGS_VARIABLE) -> DjangoFixup | None:
    """The app's Django support, or None outside a Django project."""
    if not os.environ.get(variable):
        return None
    try:
        # Lazy, Django is optional: every app comes here, only Django projects go further.
        import django  # noqa: F401
    except ImportError:
        warnings.warn(
            f"{variable} is set but Django is not installed, so caraway's Django support is "
            'off: pip install "caraway[django]", or unset the variable',
            CarawayWarning,
            stacklevel=3,
        )
        return None
    return DjangoFixup(app).install()


class DjangoFixup:
    """Django support for one app (see the module's docstring)."""

    task_cls = TASK_CLS

    def __init__(self, app: Caraway) -> None:
        self.app = app

    def install(self) -> DjangoFixup:
        signals.import_modules.connect(self._on_import_modules, sender=self.app)
        signals.worker_init.connect(self._on_worker_init)
        return self

    def autodiscover_tasks(self) -> Iterable[str]:
        """Every installed app's package (an ``AppConfig`` path counts as its ``name``)."""
        setup_django()
        # Lazy, Django's app registry: importable only once Django is set up.
        from django.apps import apps

        return [config.name for config in apps.get_app_configs()]

    def _on_import_modules(self, sender: Any = None, **_: Any) -> None:
        setup_django()

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        setup_django()
        install_worker_hooks()
        close_connections()  # the parent's own, opened while booting: children must not share
        warn_about_debug()


def setup_django() -> None:
    """``django.setup()`` once; a no-op when the project (its ``manage.py``) did it already."""
    # Lazy, Django is optional: only Django projects come here.
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


@functools.cache
def install_worker_hooks() -> None:
    """Connect the per-task and after-fork connection hygiene, once per process."""
    after_fork_in_child(drop_inherited_connections)
    signals.task_prerun.connect(close_old_connections, dispatch_uid=close_old_connections)
    signals.task_postrun.connect(close_old_connections, dispatch_uid=close_old_connections)
    signals.task_postrun.connect(close_caches, dispatch_uid=close_caches)


def close_old_connections(**_: Any) -> None:
    """Close this thread's connections that are broken or older than ``CONN_MAX_AGE``.

    A connection inside ``transaction.atomic()`` (a task applied eagerly from another task's
    transaction) is left alone: closing it would end that transaction.
    """
    # Lazy, Django is optional: only Django projects connect this receiver.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def close_caches(**_: Any) -> None:
    """Close cache connections after a task, as Django does after a request."""
    # Lazy, Django is optional: only Django projects connect this receiver.
    from django.core.cache import caches

    caches.close_all()


def close_connections() -> None:
    """Close every connection this thread opened (the worker's, before it forks children)."""
    # Lazy, Django is optional: only Django projects come here.
    from django.db import connections

    connections.close_all()


def drop_inherited_connections() -> None:
    """In a forked child: let go of the parent's connections without speaking on them.

    Closing a client politely sends the server a goodbye (PostgreSQL's Terminate) on the socket
    the parent still uses, which would end the parent's session. So the child first points the
    descriptor at /dev/null, then closes: the goodbye goes nowhere, the parent's socket lives.
    """
    # Lazy, Django is optional: only Django projects register this reset.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None:
            continue
        _detach_socket(raw)
        try:
            connection.close()
        except Exception as exc:  # the client may complain that its socket went away
            logger.debug("Dropping inherited connection %r: %s", connection.alias, exc)
        connection.connection = None


def _detach_socket(raw: Any) -> None:
    """Point ``raw``'s socket descriptor at /dev/null in this process only (if it has one)."""
    fileno = getattr(raw, "fileno", None)
    if not callable(fileno):
        return  # SQLite: a file, nothing shared with a server
    try:
        descriptor = int(fileno())
    except Exception:  # already closed
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def warn_about_debug() -> None:
    """Django's ``DEBUG`` keeps every query in memory: a worker that runs for days grows."""
    # Lazy, Django is optional: only Django projects come here.
    from django.conf import settings

    if settings.DEBUG:
        logger.warning(
            "Django's DEBUG is on: it keeps every SQL query in memory, so a long-running "
            "worker grows without bound. Turn DEBUG off in production."
        )
