"""Every change to a periodic task or a schedule moves ``ScheduleChange.version``, so running
beats reload the tasks within a second, without a restart.

Model saves and deletes (the admin, ``PeriodicTask.objects.create``, ...) signal it; a bulk
``QuerySet.update()`` sends no signal, so code that uses one calls :func:`bump` itself.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from caraway.contrib.django.models import (
    BeatRun,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    ScheduleChange,
    SolarSchedule,
)

WATCHED: tuple[type[models.Model], ...] = (
    PeriodicTask,
    IntervalSchedule,
    CrontabSchedule,
    SolarSchedule,
    ClockedSchedule,
)


def bump(using: str | None = None) -> None:
    """Move the change counter by one (creating its row the first time)."""
    rows = ScheduleChange.objects.using(using) if using else ScheduleChange.objects
    if rows.filter(ident=1).update(version=F("version") + 1, last_update=timezone.now()):
        return
    try:
        with transaction.atomic(using=using):
            rows.create(ident=1, version=1)
    except IntegrityError:  # another process created it first
        rows.filter(ident=1).update(version=F("version") + 1, last_update=timezone.now())


def version(using: str | None = None) -> int:
    rows = ScheduleChange.objects.using(using) if using else ScheduleChange.objects
    found = rows.filter(ident=1).values_list("version", flat=True).first()
    return int(found or 0)


def _changed(sender: Any, instance: models.Model, using: str, **kwargs: Any) -> None:
    bump(using)


def _task_deleted(sender: Any, instance: PeriodicTask, using: str, **kwargs: Any) -> None:
    BeatRun.objects.using(using).filter(name=instance.name).delete()
    bump(using)


def connect() -> None:
    for model in WATCHED:
        post_save.connect(_changed, sender=model, dispatch_uid=f"caraway-save-{model.__name__}")
        if model is not PeriodicTask:
            post_delete.connect(
                _changed, sender=model, dispatch_uid=f"caraway-delete-{model.__name__}"
            )
    post_delete.connect(_task_deleted, sender=PeriodicTask, dispatch_uid="caraway-delete-task")
