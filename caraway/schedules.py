"""Celery's schedules: ``schedule`` (an interval), ``crontab`` and ``solar``.

Each answers two questions about an entry that last ran at ``last_run_at``:
``is_due(last_run_at)`` → ``schedstate(is_due, next)`` (``next``: seconds until it is worth
asking again) and ``remaining_estimate(last_run_at)`` → the time left as a ``timedelta``.

Times are aware datetimes in the app's zone (``timezone``, ``enable_utc``). Intervals count
real elapsed time; crontab fields are read on the local wall clock, with these DST rules:

* a wall time skipped by a spring-forward change runs once, at the first instant after the
  gap (a 02:30 job runs at 03:00 that day);
* a wall time repeated by a fall-back change runs once, at its first occurrence — except in
  schedules that run every hour, which run in the repeated hour too (as cron does).

"Now" comes from ``nowfun`` when given, else from the clock the scheduler installs with
:func:`use_clock`, else the system clock: tests drive schedules in virtual time.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple

from caraway.current import get_current_app
from caraway.utils import solar as solar_maths
from caraway.utils.cronfield import FIELDS as _FIELDS
from caraway.utils.cronfield import ParseException, parse_field
from caraway.utils.time import timezone_for

if typing.TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = [
    "BaseSchedule",
    "ParseException",
    "crontab",
    "maybe_schedule",
    "schedstate",
    "schedule",
    "solar",
    "use_clock",
]

_UTC = timezone.utc
#: Largest change of a zone's UTC offset at one transition, with margin (Troll: 2 h).
_SHIFT = timedelta(hours=3)
_MINUTE = timedelta(minutes=1)
#: Years a crontab search may look ahead: Feb 29 on a given weekday can take 28 years.
_SEARCH_YEARS = 30
#: Missed runs walked when finding the latest due time; beyond it "now" is used.
_CATCH_UP_STEPS = 5000

_now_source: ContextVar[Callable[[], datetime] | None] = ContextVar(
    "caraway_schedule_clock", default=None
)


class schedstate(NamedTuple):
    """``is_due`` and ``next``: seconds until the schedule should be asked again."""

    is_due: bool
    next: float


@contextmanager
def use_clock(now: Callable[[], datetime]) -> Iterator[None]:
    """Make schedules without ``nowfun`` read ``now()`` inside this block (beat's clock)."""
    token = _now_source.set(now)
    try:
        yield
    finally:
        _now_source.reset(token)


class BaseSchedule:
    """What beat asks of a schedule; subclasses implement ``remaining_estimate``/``is_due``."""

    def __init__(
        self, nowfun: Callable[[], datetime] | None = None, app: Caraway | None = None
    ) -> None:
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Caraway:
        if self._app is None:
            return get_current_app()
        return self._app

    @app.setter
    def app(self, value: Caraway) -> None:
        self._app = value

    @property
    def tz(self) -> tzinfo:
        conf = self.app.conf
        return timezone_for(conf.timezone, bool(conf.enable_utc))

    @property
    def utc_enabled(self) -> bool:
        return bool(self.app.conf.enable_utc)

    def now(self) -> datetime:
        source = self.nowfun or _now_source.get()
        value = source() if source is not None else datetime.now(_UTC)
        return self.maybe_make_aware(value)

    def maybe_make_aware(self, value: datetime) -> datetime:
        """``value`` in the schedule's zone; a naive value is read as UTC (Celery's rule)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        return value.astimezone(self.tz)

    def to_local(self, value: datetime) -> datetime:
        return self.maybe_make_aware(value)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        raise NotImplementedError

    def is_due(self, last_run_at: datetime) -> schedstate:
        raise NotImplementedError

    def due_time(self, last_run_at: datetime, now: datetime) -> datetime:
        """The scheduled time of the run that is due at ``now`` (caraway's addition).

        Beat records it as ``last_run_at`` so the next run keeps to the schedule, and runs
        missed while beat was down collapse into this one run. Default: ``now``.
        """
        return now

    def _next_after(self, moment: datetime) -> datetime | None:
        raise NotImplementedError

    def _state(self, last_run_at: datetime) -> schedstate:
        """Due once the first time after ``last_run_at`` has come; then ask at the one after."""
        now = self.now()
        upcoming = self._next_after(self.maybe_make_aware(last_run_at))
        if upcoming is None:
            return schedstate(False, 86400.0)
        remaining = (upcoming - now).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        following = self._next_after(now)
        return schedstate(True, 86400.0 if following is None else (following - now).total_seconds())

    def _latest_due(self, last_run_at: datetime, now: datetime) -> datetime:
        fire = self._next_after(self.maybe_make_aware(last_run_at))
        if fire is None or fire > now:
            return now
        for _ in range(_CATCH_UP_STEPS):
            following = self._next_after(fire)
            if following is None or following > now:
                return fire
            fire = following
        return now


class schedule(BaseSchedule):
    """Run every ``run_every`` (seconds or a ``timedelta``) of real elapsed time.

    ``relative=True`` rounds each run time down to the interval's resolution (days, hours,
    minutes), so an hourly entry runs on the hour.
    """

    def __init__(
        self,
        run_every: float | timedelta | None = None,
        relative: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Caraway | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        if isinstance(run_every, bool) or not isinstance(run_every, int | float | timedelta):
            raise TypeError(
                f"schedule(run_every=...) takes seconds or a timedelta, not {run_every!r}"
            )
        every = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        if every <= timedelta(0):
            raise ValueError(f"schedule(run_every=...) must be above zero, got {run_every!r}")
        self.run_every = every
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        seconds = self.seconds
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds >= size:
                value = seconds / size
                return f"{value:.2f} {unit}{'s' if value != 1 else ''}"
        return f"{seconds:.2f} second{'s' if seconds != 1 else ''}"

    def _end(self, last_run_at: datetime) -> datetime:
        # Arithmetic in UTC: an hour is 3600 s even across a DST change.
        end = last_run_at.astimezone(_UTC) + self.run_every
        return self._rounded(end) if self.relative else end

    def _rounded(self, moment: datetime) -> datetime:
        local = moment.astimezone(self.tz)
        if self.run_every.days >= 1:
            local = local.replace(hour=0, minute=0, second=0, microsecond=0)
        elif self.run_every.seconds >= 3600:
            local = local.replace(minute=0, second=0, microsecond=0)
        elif self.run_every.seconds >= 60:
            local = local.replace(second=0, microsecond=0)
        else:
            local = local.replace(microsecond=0)
        return local

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self._end(self.maybe_make_aware(last_run_at)) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining <= 0:
            return schedstate(True, self.seconds)
        return schedstate(False, remaining)

    def due_time(self, last_run_at: datetime, now: datetime) -> datetime:
        """The last point of the grid ``last_run_at + k * run_every`` not after ``now``."""
        last = self.maybe_make_aware(last_run_at).astimezone(_UTC)
        first = self._end(last)
        if first > now:
            return now
        steps = max(1, int((now - last) / self.run_every))
        return self.maybe_make_aware(self._end(last + (steps - 1) * self.run_every))

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.run_every, self.relative))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.run_every, self.relative, self.nowfun)


class crontab(BaseSchedule):
    """Run at the wall-clock times the five cron fields select (Celery's grammar).

    All fields must match (Celery ANDs ``day_of_month`` and ``day_of_week``, unlike cron).
    """

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        nowfun: Callable[[], datetime] | None = None,
        app: Caraway | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        self._orig_minute = minute
        self._orig_hour = hour
        self._orig_day_of_week = day_of_week
        self._orig_day_of_month = day_of_month
        self._orig_month_of_year = month_of_year
        self.minute = parse_field("minute", minute)
        self.hour = parse_field("hour", hour)
        self.day_of_week = parse_field("day_of_week", day_of_week)
        self.day_of_month = parse_field("day_of_month", day_of_month)
        self.month_of_year = parse_field("month_of_year", month_of_year)
        self._minutes = sorted(self.minute)
        self._every_hour = len(self.hour) == len(_FIELDS["hour"].values)
        self._check_dates_exist()

    @classmethod
    def from_string(cls, expression: str, **kwargs: Any) -> crontab:
        """``crontab.from_string('*/15 9-17 * * mon-fri')``: minute hour dom month dow."""
        parts = expression.split()
        if len(parts) != 5:
            raise ParseException(
                f"crontab expression {expression!r} needs 5 fields "
                "(minute hour day_of_month month_of_year day_of_week)"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, **kwargs)

    def _check_dates_exist(self) -> None:
        leap_year = 2024
        for month in self.month_of_year:
            last_day = (date(leap_year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
            if any(day <= last_day for day in self.day_of_month):
                return
        raise ParseException(
            f"crontab day_of_month {self._orig_day_of_month!r} with month_of_year "
            f"{self._orig_month_of_year!r} never happens (no such date)"
        )

    # --- the search ------------------------------------------------------------------------

    def _matches_day(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday is 0; cron: Sunday is 0
        return day.day in self.day_of_month and weekday in self.day_of_week

    def _next_wall(self, wall: datetime) -> datetime:
        """The first naive wall-clock minute after ``wall`` that every field selects."""
        candidate = wall.replace(second=0, microsecond=0) + _MINUTE
        limit = candidate.year + _SEARCH_YEARS
        while candidate.year < limit:
            if candidate.month not in self.month_of_year:
                year, month = divmod(candidate.month, 12)
                candidate = datetime(candidate.year + year, month + 1, 1)
            elif not self._matches_day(candidate):
                candidate = datetime(candidate.year, candidate.month, candidate.day) + timedelta(
                    days=1
                )
            elif candidate.hour not in self.hour:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            else:
                minute = next((m for m in self._minutes if m >= candidate.minute), None)
                if minute is not None:
                    return candidate.replace(minute=minute)
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
        raise ParseException(f"{self!r} selects no time in the next {_SEARCH_YEARS} years")

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        """The UTC instants at which the wall clock shows ``wall`` (see the module's DST rules)."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(_UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(_UTC)
        if first == second:
            return [first]
        if first > second:  # skipped by a spring-forward change: run when the gap ends
            moment = second
            while moment.astimezone(tz).replace(tzinfo=None) < wall and moment < first:
                moment += _MINUTE
            return [moment]
        return [first, second] if self._every_hour else [first]

    def _next_after(self, moment: datetime) -> datetime:
        tz = self.tz
        after = moment.astimezone(_UTC)
        wall = after.astimezone(tz).replace(tzinfo=None)
        if _near_transition(after, tz):
            wall -= _SHIFT  # a repeated hour may hold runs whose wall time is behind ours
        best: datetime | None = None
        best_wall = wall
        while True:
            wall = self._next_wall(wall)
            if best is not None and wall > best_wall + _SHIFT:
                break
            for instant in self._instants(wall, tz):
                if instant > after and (best is None or instant < best):
                    best, best_wall = instant, wall
            if best is not None and not _near_transition(best, tz):
                break
        return best.astimezone(tz)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self._next_after(self.maybe_make_aware(last_run_at)) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when a run time passed since ``last_run_at``; with ``beat_cron_starting_deadline``
        set, a run missed by more than that many seconds is dropped instead of sent late."""
        state = self._state(last_run_at)
        deadline = self.app.conf.beat_cron_starting_deadline
        if state.is_due and deadline is not None:
            now = self.now()
            if (now - self._latest_due(last_run_at, now)).total_seconds() > float(deadline):
                return schedstate(False, (self._next_after(now) - now).total_seconds())
        return state

    def due_time(self, last_run_at: datetime, now: datetime) -> datetime:
        return self._latest_due(last_run_at, now)

    def __repr__(self) -> str:
        fields = (
            self._orig_minute,
            self._orig_hour,
            self._orig_day_of_month,
            self._orig_month_of_year,
            self._orig_day_of_week,
        )
        return f"<crontab: {' '.join(_text(f) for f in fields)} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[frozenset[int], ...]:
        return (
            self.minute,
            self.hour,
            self.day_of_week,
            self.day_of_month,
            self.month_of_year,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self._orig_minute,
            self._orig_hour,
            self._orig_day_of_week,
            self._orig_day_of_month,
            self._orig_month_of_year,
            self.nowfun,
        )


class solar(BaseSchedule):
    """Run at a solar event (``'sunrise'``, ``'sunset'``, ``'dawn_civil'``, ...) at a place."""

    def __init__(
        self,
        event: str,
        lat: float,
        lon: float,
        nowfun: Callable[[], datetime] | None = None,
        app: Caraway | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        if event not in solar_maths.EVENTS:
            raise ValueError(
                f"solar: unknown event {event!r}; choose one of {', '.join(solar_maths.EVENTS)}"
            )
        if not -90 <= float(lat) <= 90:
            raise ValueError(f"solar: latitude {lat!r} must be between -90 and 90")
        if not -180 <= float(lon) <= 180:
            raise ValueError(f"solar: longitude {lon!r} must be between -180 and 180")
        self.event = event
        self.lat = float(lat)
        self.lon = float(lon)

    def _next_after(self, moment: datetime) -> datetime | None:
        day = moment.astimezone(_UTC).date() - timedelta(days=1)
        for offset in range(370):  # a polar night ends within a year
            when = day + timedelta(days=offset)
            found = solar_maths.event_time(self.event, when, self.lat, self.lon)
            if found is not None and found > moment:
                return found.astimezone(self.tz)
        return None

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        upcoming = self._next_after(self.maybe_make_aware(last_run_at))
        if upcoming is None:
            return timedelta(days=1)
        return upcoming - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        return self._state(last_run_at)

    def due_time(self, last_run_at: datetime, now: datetime) -> datetime:
        return self._latest_due(last_run_at, now)

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.event, self.lat, self.lon, self.nowfun)


def maybe_schedule(
    value: Any, relative: bool = False, app: Caraway | None = None
) -> BaseSchedule | Any:
    """Seconds or a ``timedelta`` become a ``schedule``; schedule objects pass through."""
    if isinstance(value, bool):
        raise TypeError(f"a schedule is seconds, a timedelta or a schedule object, not {value!r}")
    if isinstance(value, int | float | timedelta):
        return schedule(value, relative, app=app)
    if isinstance(value, BaseSchedule) and app is not None and value._app is None:
        value.app = app
    return value


def _near_transition(moment: datetime, tz: tzinfo) -> bool:
    before = (moment - _SHIFT).astimezone(tz).utcoffset()
    after = (moment + _SHIFT).astimezone(tz).utcoffset()
    return before != after


def _text(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(v) for v in value)
