"""``ScheduleEntry``: one periodic task, how it is read from ``beat_schedule`` and how it is
stored by the database scheduler (a JSON document per entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from caraway.exceptions import ImproperlyConfigured
from caraway.schedules import BaseSchedule, crontab, maybe_schedule, schedstate, schedule, solar
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = ["ScheduleEntry", "entries_from_config", "entry_from_definition", "schedule_to_dict"]

#: Keys a ``beat_schedule`` entry may have (Celery's, plus the database scheduler's).
CONFIG_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative", "name"})
DEFINITION_KEYS = CONFIG_KEYS | {"enabled", "one_off", "start_time", "expires", "description"}
#: Seconds before a disabled, finished or not-yet-started entry is looked at again.
IDLE_RECHECK = 5.0
NEVER = 86400.0


@dataclass
class ScheduleEntry:
    """A periodic task: what to send, when, and when it last ran (Celery's attributes)."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    last_run_at: datetime | None = None
    total_run_count: int = 0
    relative: bool = False
    enabled: bool = True
    one_off: bool = False
    start_time: datetime | None = None
    expires: datetime | None = None
    description: str = ""
    #: Where the entry comes from: "config" (beat_schedule) or "database".
    source: str = "config"

    def is_due(self) -> schedstate:
        """The schedule's answer, after the database scheduler's switches."""
        if not self.enabled or (self.one_off and self.total_run_count > 0):
            return schedstate(False, IDLE_RECHECK)
        now = self.schedule.now()
        if self.expires is not None and now >= self.expires:
            return schedstate(False, NEVER)
        if self.start_time is not None and now < self.start_time:
            return schedstate(False, max((self.start_time - now).total_seconds(), 0.01))
        if self.last_run_at is None:  # never ran: it starts counting now, as in Celery
            self.last_run_at = now
        return self.schedule.is_due(self.last_run_at)

    def due_time(self, now: datetime) -> datetime:
        return self.schedule.due_time(self.last_run_at or now, now)

    def definition(self) -> dict[str, Any]:
        """The JSON document the database scheduler stores for this entry."""
        return {
            "task": self.task,
            "schedule": schedule_to_dict(self.schedule),
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "enabled": self.enabled,
            "one_off": self.one_off,
            "start_time": _iso(self.start_time),
            "expires": _iso(self.expires),
            "description": self.description,
        }

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"<ScheduleEntry: {self.name} {self.task}({call}) {self.schedule!r}>"


def entries_from_config(app: Caraway) -> dict[str, ScheduleEntry]:
    """The entries of ``beat_schedule``; a malformed one is an error that names it."""
    table = app.conf.beat_schedule or {}
    if not isinstance(table, Mapping):
        raise ImproperlyConfigured(f"beat_schedule must be a dict of entries, not {table!r}")
    return {
        str(name): _entry(app, str(name), spec, CONFIG_KEYS, "beat_schedule")
        for name, spec in table.items()
    }


def entry_from_definition(app: Caraway, name: str, definition: Mapping[str, Any]) -> ScheduleEntry:
    """An entry stored by the database scheduler."""
    spec = dict(definition)
    spec["schedule"] = schedule_from_dict(spec.get("schedule"), app, name)
    entry = _entry(app, name, spec, DEFINITION_KEYS, "stored schedule")
    entry.source = "database"
    return entry


def _entry(
    app: Caraway, name: str, spec: Any, allowed: frozenset[str], where: str
) -> ScheduleEntry:
    if not isinstance(spec, Mapping):
        raise ImproperlyConfigured(f"{where} entry {name!r} must be a dict, not {spec!r}")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ImproperlyConfigured(
            f"{where} entry {name!r} has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    task = spec.get("task")
    if not task or not isinstance(task, str):
        raise ImproperlyConfigured(f"{where} entry {name!r} needs 'task': the task's name")
    if "schedule" not in spec:
        raise ImproperlyConfigured(
            f"{where} entry {name!r} needs 'schedule': seconds, a timedelta, crontab() or solar()"
        )
    relative = bool(spec.get("relative", False))
    try:
        when = maybe_schedule(spec["schedule"], relative, app=app)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where} entry {name!r}: {exc}") from exc
    if not hasattr(when, "is_due"):
        raise ImproperlyConfigured(
            f"{where} entry {name!r}: schedule {spec['schedule']!r} is not seconds, a "
            "timedelta or a schedule object (crontab, solar, schedule)"
        )
    args = spec.get("args") or ()
    kwargs = spec.get("kwargs") or {}
    options = spec.get("options") or {}
    if isinstance(args, str | bytes) or not isinstance(args, list | tuple):
        raise ImproperlyConfigured(f"{where} entry {name!r}: 'args' must be a list or tuple")
    if not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"{where} entry {name!r}: 'kwargs' and 'options' must be dicts")
    return ScheduleEntry(
        name=str(spec.get("name") or name),
        task=task,
        schedule=when,
        args=tuple(args),
        kwargs=dict(kwargs),
        options=dict(options),
        relative=relative,
        enabled=bool(spec.get("enabled", True)),
        one_off=bool(spec.get("one_off", False)),
        start_time=parse_iso(spec.get("start_time")),
        expires=parse_iso(spec.get("expires")),
        description=str(spec.get("description") or ""),
    )


def schedule_to_dict(value: BaseSchedule) -> dict[str, Any]:
    """A schedule as JSON: ``{"every": s}``, ``{"crontab": {...}}`` or ``{"solar": {...}}``."""
    if isinstance(value, schedule):
        return {"every": value.seconds, "relative": value.relative}
    if isinstance(value, crontab):
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        return {"crontab": {name: _plain(getattr(value, f"_orig_{name}")) for name in fields}}
    if isinstance(value, solar):
        return {"solar": {"event": value.event, "lat": value.lat, "lon": value.lon}}
    raise ImproperlyConfigured(
        f"the database scheduler stores schedule, crontab and solar schedules, not {value!r}"
    )


def schedule_from_dict(data: Any, app: Caraway, name: str) -> BaseSchedule:
    if isinstance(data, BaseSchedule | int | float | timedelta):
        return maybe_schedule(data, app=app)
    if isinstance(data, Mapping):
        if "every" in data:
            return schedule(float(data["every"]), bool(data.get("relative")), app=app)
        if "crontab" in data:
            return crontab(**dict(data["crontab"]), app=app)
        if "solar" in data:
            return solar(**dict(data["solar"]), app=app)
    raise ImproperlyConfigured(f"stored schedule {name!r} has an unreadable schedule: {data!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, str | int):
        return value
    return sorted(int(v) for v in value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()
