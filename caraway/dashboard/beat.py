"""The Beat page's data: schedules from ``beat_schedule`` (read-only here) and those stored for
the database scheduler (``PeriodicTasks``: enable, disable), each with its last and next run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caraway.beat import PeriodicTasks
from caraway.beat.entry import entries_from_config
from caraway.exceptions import CarawayError

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.schedules import BaseSchedule


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
                 item.total_run_count, "database")
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
