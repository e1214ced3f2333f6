"""``caraway beat -S django``: periodic tasks from the Django database, edited in the admin.

Also reached by Celery's name for it, ``django_celery_beat.schedulers:DatabaseScheduler``.
Edits take effect in running beats within a second (they poll ``ScheduleChange``); any number
of beats may run against one database, and each run is sent once (see ``DjangoStore``).
Entries of ``beat_schedule`` are written to the database at start, so the admin lists them
too (as django-celery-beat does; the configuration wins over an edit at each start).
"""

from __future__ import annotations

import logging

from caraway.beat.entry import entries_from_config
from caraway.beat.scheduler import DatabaseScheduler as StoreScheduler
from caraway.contrib.django.setup import ensure_django
from caraway.engines.base.beat_store import BeatStore
from caraway.exceptions import ImproperlyConfigured

logger = logging.getLogger("caraway.beat")


class DatabaseScheduler(StoreScheduler):
    def create_store(self) -> BeatStore:
        ensure_django()
        # Lazy, the store's module imports the models, which need Django set up first.
        from caraway.contrib.django.beat_store import DjangoStore

        return DjangoStore(self.app)

    def setup_schedule(self) -> None:
        static = {}
        for name, entry in entries_from_config(self.app).items():
            try:
                self.store.put_definition(name, entry.definition())
            except ImproperlyConfigured as exc:
                logger.warning("beat: %s; it runs from the configuration only", exc)
                static[name] = entry
        self.data = static
