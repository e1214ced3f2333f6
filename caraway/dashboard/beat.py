"""The Beat page's data: schedules from ``beat_schedule`` (read-only here) and those stored for
the database scheduler (``PeriodicTasks``: enable, disable, edit), each with its last and next
run. An edit takes the schedule as text (seconds, or a five-field crontab expression) and the
arguments as JSON, the form they are stored in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caraway.beat import PeriodicTasks
from caraway.beat.entry import entries_from_config
from caraway.exceptions import CarawayError
from caraway.schedules import BaseSchedule, crontab, schedule

if TYPE_CHECKING:
    from caraway.app import Caraway

#: The crontab fields in the order of a crontab expression.
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class BadEdit(ValueError):
    """An edit the form cannot be turned into a schedule; the message says what to fix."""


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    schedule: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    total_run_count: int
    #: "database" (editable here) or "config" (``beat_schedule``: edit the code).
    source: str
    #: The schedule as the edit form takes it ("" when it cannot: a solar schedule).
    schedule_text: str = ""


def schedule_text(value: BaseSchedule) -> str:
    """Seconds for an interval, the five-field expression for a crontab, else ""."""
    if isinstance(value, schedule):
        return f"{value.seconds:g}"
    if isinstance(value, crontab):
        parts = [getattr(value, f"_orig_{name}") for name in CRON_FIELDS]
        return " ".join(
            str(part) if isinstance(part, str | int) else ",".join(map(str, sorted(part)))
            for part in parts
        )
    return ""


def parse_schedule(text: str) -> BaseSchedule | float:
    """``"60"`` (seconds) or ``"*/5 * * * *"`` (minute hour day month weekday)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            return crontab.from_string(text)
        except (CarawayError, ValueError) as exc:
            raise BadEdit(
                f"the schedule is neither seconds nor a crontab expression: {exc}"
            ) from None
    if seconds <= 0:
        raise BadEdit("an interval must be more than 0 seconds")
    return seconds


def _json(text: str, kind: type, what: str) -> Any:
    try:
        value = json.loads(text or ("[]" if kind is list else "{}"))
    except ValueError as exc:
        raise BadEdit(f"{what} must be JSON: {exc}") from None
    if not isinstance(value, kind):
        raise BadEdit(f"{what} must be a JSON {'list' if kind is list else 'object'}")
    return value


def edit(app: Caraway, name: str, schedule_field: str, args: str, kwargs: str) -> None:
    """Change a stored schedule's timing and arguments (an empty schedule keeps it)."""
    changes: dict[str, Any] = {
        "args": _json(args, list, "args"), "kwargs": _json(kwargs, dict, "kwargs"),
    }  # fmt: skip
    if schedule_field.strip():
        changes["schedule"] = parse_schedule(schedule_field)
    PeriodicTasks(app).update(name, **changes)


def _next_run(schedule: BaseSchedule, last_run_at: datetime | None) -> datetime | None:
    now = schedule.now()
    try:
        return schedule.due_time(last_run_at or now, now)
    except (ValueError, OverflowError):  # a solar event that never comes at this latitude
        return None


def schedules(app: Caraway) -> tuple[list[Schedule], str]:
    """Every schedule, and why the stored ones could not be read (empty when they could)."""
    found = [
        Schedule(entry.name, entry.task, repr(entry.schedule), entry.args, entry.kwargs,
                 entry.options, entry.enabled, entry.last_run_at,
                 _next_run(entry.schedule, entry.last_run_at), entry.total_run_count, "config")
        for entry in entries_from_config(app).values()
    ]  # fmt: skip
    problem = ""
    try:
        stored = PeriodicTasks(app).list()
    except (CarawayError, NotImplementedError) as exc:
        stored, problem = [], f"stored schedules unavailable: {exc}"
    found += [
        Schedule(item.name, item.task, repr(item.schedule), item.args, item.kwargs,
                 item.options, item.enabled, item.last_run_at,
                 _next_run(item.schedule, item.last_run_at) if item.enabled else None,
                 item.total_run_count, "database", schedule_text(item.schedule))
        for item in stored
    ]  # fmt: skip
    return found, problem


def set_enabled(app: Caraway, name: str, enabled: bool) -> None:
    """Switch a stored schedule on or off (beats pick the change up on their next look)."""
    PeriodicTasks(app).update(name, enabled=enabled)


def run_now(app: Caraway, name: str) -> str:
    """Send the schedule's task once now, as beat would; returns the task id."""
    chosen = next((s for s in schedules(app)[0] if s.name == name), None)
    if chosen is None:
        raise KeyError(name)
    result = app.send_task(chosen.task, args=chosen.args, kwargs=chosen.kwargs, **chosen.options)
    return str(result.id)
