"""A ``PeriodicTask`` row as the database scheduler's definition (the JSON-like dict
``caraway.beat`` reads), and a definition written back as a row with its schedule row.

A definition lists only what differs from the defaults, so what was put reads back the same.
An interval reads back as ``{"every": seconds}``; a crontab (it carries its time zone) and a
clocked time read back as schedule objects, which the scheduler accepts as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from caraway.beat.entry import DEFINITION_KEYS, schedule_from_dict
from caraway.contrib.django.backend import from_column, to_column
from caraway.contrib.django.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from caraway.contrib.django.schedules import ZonedCrontab, clocked
from caraway.exceptions import ImproperlyConfigured
from caraway.schedules import BaseSchedule, crontab, schedule, solar
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway

#: Send options with a column of their own (``expires``, in seconds, is ``expire_seconds``).
OPTION_COLUMNS = ("queue", "exchange", "routing_key", "priority", "headers", "expires")
_CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


def definition_of(task: PeriodicTask) -> dict[str, Any]:
    """The definition of a row (its schedule row fetched with it)."""
    found: dict[str, Any] = {"task": task.task}
    when = _schedule_of(task)
    if when is not None:
        found["schedule"] = when
    args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    if args:
        found["args"] = args
    if kwargs:
        found["kwargs"] = kwargs
    options = _options_of(task)
    if options:
        found["options"] = options
    if not task.enabled:
        found["enabled"] = False
    if task.one_off:
        found["one_off"] = True
    for key in ("start_time", "expires"):
        moment = from_column(getattr(task, key))
        if moment is not None:
            found[key] = moment.astimezone(timezone.utc).isoformat()
    if task.description:
        found["description"] = task.description
    return found


def _schedule_of(task: PeriodicTask) -> Any:
    if task.interval is not None:
        return {"every": task.interval.seconds}
    if task.crontab is not None:
        return task.crontab.schedule()
    if task.solar is not None:
        row = task.solar
        return {"solar": {"event": row.event, "lat": float(row.latitude),
                          "lon": float(row.longitude)}}  # fmt: skip
    if task.clocked is not None:
        return clocked(from_column(task.clocked.clocked_time) or task.clocked.clocked_time)
    return None


def _options_of(task: PeriodicTask) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("queue", "exchange", "routing_key", "priority"):
        value = getattr(task, key)
        if value not in (None, ""):
            options[key] = value
    headers = json.loads(task.headers or "{}")
    if headers:
        options["headers"] = headers
    if task.expire_seconds is not None:
        options["expires"] = task.expire_seconds
    return options


def write_definition(app: Caraway, name: str, definition: Mapping[str, Any]) -> PeriodicTask:
    """Create or replace the row ``name`` from ``definition``; an unstorable field is an
    error naming it, and nothing is written then."""
    unknown = sorted(set(definition) - DEFINITION_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"periodic task {name!r}: unknown field(s) {', '.join(unknown)}; "
            f"fields: {', '.join(sorted(DEFINITION_KEYS))}"
        )
    task_name = definition.get("task")
    if not task_name or not isinstance(task_name, str):
        raise ImproperlyConfigured(f"periodic task {name!r} needs 'task': the task's name")
    row = PeriodicTask.objects.filter(name=name).first() or PeriodicTask(name=name)
    row.task = task_name
    row.interval = row.crontab = row.solar = row.clocked = None
    if definition.get("schedule") is not None:
        _set_schedule(row, _schedule(app, name, definition["schedule"]), app)
    row.args = json.dumps(list(definition.get("args") or []))
    row.kwargs = json.dumps(dict(definition.get("kwargs") or {}))
    _set_options(row, name, dict(definition.get("options") or {}))
    row.enabled = bool(definition.get("enabled", True))
    row.one_off = bool(definition.get("one_off", False))
    row.start_time = to_column(parse_iso(definition.get("start_time")))
    row.expires = to_column(parse_iso(definition.get("expires")))
    row.description = str(definition.get("description") or "")
    row.save()
    return row


def _schedule(app: Caraway, name: str, value: Any) -> BaseSchedule:
    if isinstance(value, BaseSchedule):
        return value
    return schedule_from_dict(value, app, name)


def _set_schedule(row: PeriodicTask, when: BaseSchedule, app: Caraway) -> None:
    if isinstance(when, clocked):
        row.clocked = ClockedSchedule.objects.create(clocked_time=to_column(when.clocked_time))
    elif isinstance(when, schedule):
        if when.relative:
            raise ImproperlyConfigured(
                f"periodic task {row.name!r}: a relative interval cannot be kept in the"
                " Django database; use a crontab instead"
            )
        row.interval = _interval(when.seconds)
    elif isinstance(when, crontab):
        zone = when.zone if isinstance(when, ZonedCrontab) else _zone_name(app)
        fields = {name: _cron_text(getattr(when, f"_orig_{name}")) for name in _CRON_FIELDS}
        row.crontab = _first_or_create(CrontabSchedule, timezone=zone, **fields)
    elif isinstance(when, solar):
        row.solar = _first_or_create(
            SolarSchedule, event=when.event, latitude=_degrees(when.lat),
            longitude=_degrees(when.lon),
        )  # fmt: skip
    else:
        raise ImproperlyConfigured(
            f"periodic task {row.name!r}: the Django database keeps interval, crontab, solar"
            f" and clocked schedules, not {when!r}"
        )


def _interval(seconds: float) -> Any:
    if seconds == int(seconds):
        return _first_or_create(IntervalSchedule, every=int(seconds), period="seconds")
    return _first_or_create(IntervalSchedule, every=round(seconds * 1e6), period="microseconds")


def _first_or_create(model: Any, **fields: Any) -> Any:
    return model.objects.filter(**fields).first() or model.objects.create(**fields)


def _zone_name(app: Caraway) -> str:
    zone = app.conf.timezone
    return str(getattr(zone, "key", zone) or "UTC")


def _cron_text(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(item) for item in sorted(int(v) for v in value))


def _degrees(value: float) -> Decimal:
    return Decimal(str(round(value, 6)))


def _set_options(row: PeriodicTask, name: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTION_COLUMNS))
    if unknown:
        raise ImproperlyConfigured(
            f"periodic task {name!r}: the Django database keeps the send options"
            f" {', '.join(OPTION_COLUMNS)}, not {', '.join(unknown)}"
        )
    for key in ("queue", "exchange", "routing_key", "priority"):
        setattr(row, key, options.get(key))
    row.headers = json.dumps(dict(options.get("headers") or {}))
    expires = options.get("expires")
    if isinstance(expires, datetime):
        raise ImproperlyConfigured(
            f"periodic task {name!r}: options['expires'] must be seconds here; a moment after"
            " which no run is sent is the task's own 'expires'"
        )
    row.expire_seconds = None if expires is None else round(float(expires))
