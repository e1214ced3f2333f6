"""The two schedules the admin offers beyond Celery's: a crontab read in its own time zone,
and a clocked time (one run, at that moment)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from caraway.schedules import BaseSchedule, crontab, schedstate
from caraway.utils.time import timezone_for

if TYPE_CHECKING:
    from caraway.app import Caraway

#: How long beat may sleep before asking a clocked schedule that already ran again.
_AFTER_THE_RUN = 86400.0


class ZonedCrontab(crontab):
    """A crontab whose fields are wall-clock times in ``zone``, whatever the app's zone."""

    def __init__(self, *args: Any, zone: str = "UTC", **kwargs: Any) -> None:
        self.zone = zone
        self._tz = timezone_for(zone)  # an unknown zone fails here, naming it
        super().__init__(*args, **kwargs)

    @property
    def tz(self) -> tzinfo:
        return self._tz

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} {self.zone}>"

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (
            self._orig_minute,
            self._orig_hour,
            self._orig_day_of_week,
            self._orig_day_of_month,
            self._orig_month_of_year,
        )
        return _rebuild_zoned, (fields, self.zone)


def _rebuild_zoned(fields: tuple[Any, ...], zone: str) -> ZonedCrontab:
    return ZonedCrontab(*fields, zone=zone)


class clocked(BaseSchedule):
    """Due once ``clocked_time`` has come; its task is one-off, so it runs that once."""

    def __init__(
        self,
        clocked_time: datetime,
        nowfun: Callable[[], datetime] | None = None,
        app: Caraway | None = None,
    ) -> None:
        super().__init__(nowfun, app)
        if clocked_time.tzinfo is None:
            clocked_time = clocked_time.replace(tzinfo=timezone.utc)
        self.clocked_time = clocked_time

    def remaining_estimate(self, last_run_at: datetime) -> Any:
        return self.clocked_time - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = (self.clocked_time - self.now()).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        return schedstate(True, _AFTER_THE_RUN)

    def due_time(self, last_run_at: datetime, now: datetime) -> datetime:
        return self.clocked_time

    def __repr__(self) -> str:
        return f"<clocked: {self.clocked_time.isoformat()}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, clocked) and other.clocked_time == self.clocked_time

    def __hash__(self) -> int:
        return hash(self.clocked_time)
