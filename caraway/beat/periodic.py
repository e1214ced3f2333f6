"""``PeriodicTasks``: the database scheduler's schedules, created, changed, enabled, disabled and
removed at runtime. A running beat picks each change up within about a second.

    from caraway.beat import PeriodicTasks
    from caraway.schedules import crontab

    periodic = PeriodicTasks(app)
    periodic.add("nightly-report", "proj.tasks.report", crontab(0, 3), args=("daily",))
    periodic.disable("nightly-report")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from caraway.beat.entry import DEFINITION_KEYS, entry_from_definition, schedule_to_dict
from caraway.beat.stores import store_for_app
from caraway.current import get_current_app
from caraway.engines.base.beat_store import BeatStore
from caraway.exceptions import CarawayError
from caraway.schedules import BaseSchedule, maybe_schedule
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = ["PeriodicTask", "PeriodicTasks", "ScheduleExists", "ScheduleNotFound"]


class ScheduleNotFound(CarawayError, KeyError):
    """No stored schedule has that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ScheduleExists(CarawayError):
    """A stored schedule already has that name (pass ``replace=True`` to overwrite it)."""


@dataclass(frozen=True)
class PeriodicTask:
    """A stored schedule as ``list()``/``get()`` show it, with its run record."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    one_off: bool = False
    start_time: datetime | None = None
    expires: datetime | None = None
    description: str = ""
    last_run_at: datetime | None = None
    total_run_count: int = 0


class PeriodicTasks:
    """The schedules kept in the app's result store (SQLite, Redis or SQL)."""

    def __init__(self, app: Caraway | None = None, store: BeatStore | None = None) -> None:
        if app is None:
            app = get_current_app()
        self.app = app
        if store is None:
            store = store_for_app(app)
        self.store = store

    def add(
        self,
        name: str,
        task: Any,
        schedule: Any,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        enabled: bool = True,
        one_off: bool = False,
        start_time: datetime | str | None = None,
        expires: datetime | str | None = None,
        description: str = "",
        replace: bool = False,
    ) -> PeriodicTask:
        """Store a schedule; ``schedule`` is seconds, a timedelta, crontab() or solar()."""
        if not name or not isinstance(name, str):
            raise ValueError("a periodic task needs a name (a non-empty string)")
        if not replace and name in self.store.definitions():
            raise ScheduleExists(
                f"a schedule named {name!r} exists; remove it first, or pass replace=True"
            )
        definition = {
            "task": getattr(task, "name", task),
            "schedule": schedule_to_dict(maybe_schedule(schedule, app=self.app)),
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "options": dict(options or {}),
            "enabled": enabled,
            "one_off": one_off,
            "start_time": _iso(start_time),
            "expires": _iso(expires),
            "description": description,
        }
        return self._store(name, definition)

    def update(self, name: str, **changes: Any) -> PeriodicTask:
        """Change fields of a stored schedule (``schedule=``, ``args=``, ``enabled=``, ...)."""
        definition = self._definition(name)
        unknown = sorted(set(changes) - DEFINITION_KEYS)
        if unknown:
            raise ValueError(
                f"cannot change {', '.join(unknown)}; fields: {', '.join(sorted(DEFINITION_KEYS))}"
            )
        for key, value in changes.items():
            if key == "schedule":
                value = schedule_to_dict(maybe_schedule(value, app=self.app))
            elif key in {"start_time", "expires"}:
                value = _iso(value)
            elif key == "task":
                value = getattr(value, "name", value)
            elif key == "args":
                value = list(value)
            definition[key] = value
        return self._store(name, definition)

    def enable(self, name: str) -> PeriodicTask:
        return self.update(name, enabled=True)

    def disable(self, name: str) -> PeriodicTask:
        return self.update(name, enabled=False)

    def remove(self, name: str) -> None:
        """Delete a stored schedule and its run record."""
        if not self.store.delete_definition(name):
            raise ScheduleNotFound(f"no stored schedule named {name!r}")

    def get(self, name: str) -> PeriodicTask:
        return self._view(name, self._definition(name))

    def list(self) -> list[PeriodicTask]:
        states = self.store.states()
        return [
            self._view(name, definition, states)
            for name, definition in sorted(self.store.definitions().items())
        ]

    def _definition(self, name: str) -> dict[str, Any]:
        definition = self.store.definitions().get(name)
        if definition is None:
            raise ScheduleNotFound(f"no stored schedule named {name!r}")
        return definition

    def _store(self, name: str, definition: dict[str, Any]) -> PeriodicTask:
        view = self._view(name, definition)  # validates before anything is written
        self.store.put_definition(name, definition)
        return view

    def _view(
        self, name: str, definition: Mapping[str, Any], states: Mapping[str, Any] | None = None
    ) -> PeriodicTask:
        entry = entry_from_definition(self.app, name, definition)
        state = (self.store.states() if states is None else states).get(name)
        return PeriodicTask(
            name=name,
            task=entry.task,
            schedule=entry.schedule,
            args=entry.args,
            kwargs=entry.kwargs,
            options=entry.options,
            enabled=entry.enabled,
            one_off=entry.one_off,
            start_time=entry.start_time,
            expires=entry.expires,
            description=entry.description,
            last_run_at=(
                None if state is None else datetime.fromtimestamp(state.last_run_at, timezone.utc)
            ),
            total_run_count=0 if state is None else state.total_run_count,
        )


def _iso(value: datetime | str | None) -> str | None:
    parsed = parse_iso(value)
    return None if parsed is None else parsed.astimezone(timezone.utc).isoformat()
