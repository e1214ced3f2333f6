"""Periodic tasks as rows, edited in the admin and read by ``caraway beat -S django``.

A task has exactly one schedule: an interval, a crontab (in its own time zone), a solar
event, or a clocked time (one run, at that moment). Beat keeps its own bookkeeping beside
them: the sender lease, each entry's recorded run, and the change counter it polls.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from caraway.contrib.django.schedules import ZonedCrontab
from caraway.exceptions import CarawayError
from caraway.schedules import BaseSchedule, schedule, solar
from caraway.utils.solar import EVENTS

PERIODS = ["days", "hours", "minutes", "seconds", "microseconds"]
SOLAR_EVENTS = sorted(EVENTS)


def validate_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not a known time zone; use an IANA name such as 'Europe/Paris'"
        ) from None


class IntervalSchedule(models.Model):
    """Every ``every`` ``period``s (days, hours, minutes, seconds or microseconds)."""

    every = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    period = models.CharField(max_length=24, choices=[(p, p) for p in PERIODS])

    class Meta:
        verbose_name = "interval"
        ordering = (
            "period",
            "every",
        )

    @property
    def seconds(self) -> float:
        return timedelta(**{self.period: self.every}).total_seconds()

    def schedule(self) -> BaseSchedule:
        return schedule(self.seconds)

    def __str__(self) -> str:
        unit = self.period[:-1] if self.every == 1 else self.period
        return f"every {self.every} {unit}"


class CrontabSchedule(models.Model):
    """Cron fields read as wall-clock times in ``timezone`` (Celery's crontab grammar)."""

    minute = models.CharField(max_length=240, default="*")
    hour = models.CharField(max_length=96, default="*")
    day_of_month = models.CharField("day of month", max_length=124, default="*")
    month_of_year = models.CharField("month of year", max_length=64, default="*")
    day_of_week = models.CharField("day of week", max_length=64, default="*")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_zone])

    class Meta:
        verbose_name = "crontab"
        ordering = (
            "month_of_year",
            "day_of_month",
            "day_of_week",
            "hour",
            "minute",
        )

    def schedule(self) -> ZonedCrontab:
        return ZonedCrontab(
            minute=self.minute, hour=self.hour, day_of_week=self.day_of_week,
            day_of_month=self.day_of_month, month_of_year=self.month_of_year,
            zone=self.timezone,
        )  # fmt: skip

    def clean(self) -> None:
        try:
            self.schedule()
        except (CarawayError, ValueError, TypeError) as exc:
            raise ValidationError(str(exc)) from exc

    def __str__(self) -> str:
        fields = (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        return f"{' '.join(fields)} (m/h/dM/MY/d) {self.timezone}"


class SolarSchedule(models.Model):
    """At a solar event (sunrise, sunset, dawn, dusk, ...) seen from a place."""

    event = models.CharField(max_length=24, choices=[(e, e) for e in SOLAR_EVENTS])
    latitude = models.DecimalField(
        max_digits=9, decimal_places=6,
        validators=[MinValueValidator(-90), MaxValueValidator(90)],
    )  # fmt: skip
    longitude = models.DecimalField(
        max_digits=9, decimal_places=6,
        validators=[MinValueValidator(-180), MaxValueValidator(180)],
    )  # fmt: skip

    class Meta:
        verbose_name = "solar event"
        ordering = (
            "event",
            "latitude",
            "longitude",
        )

    def schedule(self) -> solar:
        return solar(self.event, float(self.latitude), float(self.longitude))

    def __str__(self) -> str:
        return f"{self.event} at {self.latitude}, {self.longitude}"


class ClockedSchedule(models.Model):
    """One moment: a task with this schedule runs once, then stays idle."""

    clocked_time = models.DateTimeField("clock time")

    class Meta:
        verbose_name = "clocked time"
        ordering = ("clocked_time",)

    def __str__(self) -> str:
        return str(self.clocked_time.isoformat())


def _check_json(value: str, kind: type, what: str) -> None:
    try:
        parsed = json.loads(value or ("[]" if kind is list else "{}"))
    except ValueError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise ValidationError(f"{what} must be a JSON {'array' if kind is list else 'object'}")


# Module-level functions: migrations name validators by their import path.
def validate_args(value: str) -> None:
    _check_json(value, list, "positional arguments")


def validate_kwargs(value: str) -> None:
    _check_json(value, dict, "keyword arguments")


def validate_headers(value: str) -> None:
    _check_json(value, dict, "headers")


SCHEDULE_KINDS = ("interval", "crontab", "solar", "clocked")


class PeriodicTask(models.Model):
    """A task beat sends on a schedule (django-celery-beat's ``PeriodicTask``, field for
    field). ``last_run_at`` and ``total_run_count`` are written by beat, not by the form."""

    name = models.CharField(max_length=200, unique=True, help_text="A unique name for this entry.")
    task = models.CharField(
        "task name", max_length=200, help_text="The registered task, e.g. proj.tasks.report."
    )
    interval = models.ForeignKey(IntervalSchedule, on_delete=models.CASCADE, null=True, blank=True)
    crontab = models.ForeignKey(CrontabSchedule, on_delete=models.CASCADE, null=True, blank=True)
    solar = models.ForeignKey(SolarSchedule, on_delete=models.CASCADE, null=True, blank=True)
    clocked = models.ForeignKey(ClockedSchedule, on_delete=models.CASCADE, null=True, blank=True)
    args = models.TextField(
        "positional arguments", blank=True, default="[]", validators=[validate_args],
        help_text='A JSON array, e.g. ["a", 2].',
    )  # fmt: skip
    kwargs = models.TextField(
        "keyword arguments", blank=True, default="{}", validators=[validate_kwargs],
        help_text='A JSON object, e.g. {"size": 2}.',
    )  # fmt: skip
    queue = models.CharField(max_length=200, null=True, blank=True)
    exchange = models.CharField(max_length=200, null=True, blank=True)
    routing_key = models.CharField("routing key", max_length=200, null=True, blank=True)
    headers = models.TextField(
        blank=True, default="{}", validators=[validate_headers], help_text="A JSON object."
    )
    priority = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(255)]
    )
    expires = models.DateTimeField(
        null=True, blank=True, help_text="No run is sent after this moment."
    )
    expire_seconds = models.PositiveIntegerField(
        "expire seconds", null=True, blank=True,
        help_text="Each run's message expires this many seconds after it is sent.",
    )  # fmt: skip
    one_off = models.BooleanField("one-off", default=False, help_text="Run once, then stay idle.")
    start_time = models.DateTimeField(
        "start time", null=True, blank=True, help_text="No run is sent before this moment."
    )
    enabled = models.BooleanField(default=True)
    last_run_at = models.DateTimeField("last run at", null=True, blank=True, editable=False)
    total_run_count = models.PositiveIntegerField("total runs", default=0, editable=False)
    date_changed = models.DateTimeField("changed", auto_now=True)
    description = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "periodic task"
        ordering = ("name",)

    def clean(self) -> None:
        chosen = [kind for kind in SCHEDULE_KINDS if getattr(self, f"{kind}_id") is not None]
        if len(chosen) != 1:
            message = "Choose exactly one schedule: interval, crontab, solar or clocked."
            raise ValidationError({kind: message for kind in SCHEDULE_KINDS})
        if chosen == ["clocked"] and not self.one_off:
            raise ValidationError({"one_off": "A clocked schedule runs once: tick one-off."})

    @property
    def schedule_kind(self) -> str | None:
        found = [kind for kind in SCHEDULE_KINDS if getattr(self, f"{kind}_id") is not None]
        return found[0] if found else None

    def __str__(self) -> str:
        kind = self.schedule_kind
        return f"{self.name}: {getattr(self, kind) if kind else 'no schedule'}"


class ScheduleChange(models.Model):
    """One row whose ``version`` moves on every change to a periodic task or schedule: each
    running beat polls it (one read a second) and reloads the tasks when it moved."""

    ident = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.BigIntegerField(default=0)
    last_update = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "schedule change"

    def __str__(self) -> str:
        return f"version {self.version} ({self.last_update})"


class BeatLease(models.Model):
    """Which beat sends (one among all that run), until ``expires_at`` (a UNIX time)."""

    name = models.CharField(max_length=64, primary_key=True)
    owner = models.CharField(max_length=255)
    expires_at = models.FloatField()

    def __str__(self) -> str:
        return f"{self.name}: {self.owner}"


class BeatRun(models.Model):
    """The run beat last sent for an entry: its scheduled time (UNIX) and the count."""

    name = models.CharField(max_length=255, primary_key=True)
    last_run_at = models.FloatField()
    total_run_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}: {self.total_run_count} runs"
