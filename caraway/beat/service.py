"""``Service``: the beat loop in this process; ``EmbeddedService``: the same in a thread of a
worker (``worker -B``)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.beat.scheduler import ERROR_PAUSE, Scheduler
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.imports import symbol_by_name

if TYPE_CHECKING:
    from caraway.app import Caraway

logger = logging.getLogger("caraway.beat")

#: ``-S`` short names, and Celery's class paths (a Celery config names them).
SCHEDULER_ALIASES = {
    "persistent": "caraway.beat:PersistentScheduler",
    "database": "caraway.beat:DatabaseScheduler",
    "db": "caraway.beat:DatabaseScheduler",
    "celery.beat:PersistentScheduler": "caraway.beat:PersistentScheduler",
    "celery.beat.PersistentScheduler": "caraway.beat:PersistentScheduler",
    "celery.beat:Scheduler": "caraway.beat:Scheduler",
    "celery.beat.Scheduler": "caraway.beat:Scheduler",
    "django": "caraway.contrib.django.scheduler:DatabaseScheduler",
    "django_celery_beat.schedulers:DatabaseScheduler": (
        "caraway.contrib.django.scheduler:DatabaseScheduler"
    ),
    "django_celery_beat.schedulers.DatabaseScheduler": (
        "caraway.contrib.django.scheduler:DatabaseScheduler"
    ),
}


def scheduler_class(spec: str | type[Scheduler]) -> type[Scheduler]:
    """The scheduler class ``-S``/``beat_scheduler`` names; a clear error when it does not."""
    if not isinstance(spec, str):
        return spec
    path = SCHEDULER_ALIASES.get(spec, spec)
    try:
        found = symbol_by_name(path)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"cannot load the beat scheduler {spec!r} ({exc}); use 'persistent', 'database', "
            "'django' or a class path such as 'proj.schedulers:MyScheduler'"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ImproperlyConfigured(f"beat scheduler {spec!r} is not a caraway.beat.Scheduler")
    return found


class Service:
    """Runs a scheduler until ``stop()``: tick, sleep until the next due time, repeat."""

    def __init__(
        self,
        app: Caraway,
        max_interval: float | None = None,
        schedule_filename: str | None = None,
        scheduler_cls: str | type[Scheduler] | None = None,
        **scheduler_options: Any,
    ) -> None:
        self.app = app
        self.max_interval = max_interval
        self.schedule_filename = schedule_filename
        self.scheduler_cls = scheduler_class(scheduler_cls or app.conf.beat_scheduler)
        self.scheduler_options = scheduler_options
        self._scheduler: Scheduler | None = None
        self._stop = threading.Event()
        self.stopped = threading.Event()
        self.embedded = False

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            options = dict(self.scheduler_options)
            if self.schedule_filename:
                options["schedule_filename"] = self.schedule_filename
            self._scheduler = self.scheduler_cls(
                self.app, max_interval=self.max_interval, **options
            )
        return self._scheduler

    def start(self) -> None:
        """Run the loop in this thread until ``stop()``; gives the lease up on the way out."""
        app = self.app
        if not self.embedded:  # a worker has imported them already
            app.import_task_modules()
        app.finalize()
        (signals.beat_embedded_init if self.embedded else signals.beat_init).send(sender=self)
        scheduler = self.scheduler
        logger.info(
            "beat: starting (scheduler %s, %d entries, store %s, checks at least every %g s)",
            type(scheduler).__name__, len(scheduler.data), scheduler.store.describe(),
            scheduler.max_interval,
        )  # fmt: skip
        try:
            while not self._stop.is_set():
                try:
                    interval = scheduler.tick()
                except Exception:
                    logger.exception("beat: tick failed; retrying")
                    interval = ERROR_PAUSE
                self._stop.wait(interval)
        finally:
            scheduler.close()
            self.stopped.set()
            logger.info("beat: stopped")

    def stop(self, wait: bool = False) -> None:
        self._stop.set()
        if wait:
            self.stopped.wait()


class EmbeddedService(Service):
    """Beat in a thread beside a worker's consumer (``worker -B``): for development."""

    def __init__(self, app: Caraway, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.embedded = True
        self.thread = threading.Thread(target=self.start, name="caraway-beat", daemon=True)

    def run_in_background(self) -> None:
        self.thread.start()

    def stop(self, wait: bool = False) -> None:
        super().stop()
        if wait and self.thread.is_alive():
            self.thread.join(10.0)
