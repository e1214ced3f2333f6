"""Beat: sends periodic tasks on Celery's schedules, one sender among any number of beats.

``Service`` runs a ``Scheduler`` loop; ``PersistentScheduler`` (the default) keeps runs in a
file, ``DatabaseScheduler`` keeps schedules and runs in the result store, editable at
runtime through :class:`PeriodicTasks`.
"""

from caraway.beat.entry import ScheduleEntry
from caraway.beat.periodic import PeriodicTask, PeriodicTasks
from caraway.beat.scheduler import (
    DatabaseScheduler,
    PersistentScheduler,
    Scheduler,
    SchedulingError,
)
from caraway.beat.service import EmbeddedService, Service

__all__ = [
    "DatabaseScheduler",
    "EmbeddedService",
    "PeriodicTask",
    "PeriodicTasks",
    "PersistentScheduler",
    "ScheduleEntry",
    "Scheduler",
    "SchedulingError",
    "Service",
]
