"""Clocks and timestamps.

Everything time-based in caraway (ETA, rate limits, timers, leases) takes a ``Clock`` so tests
can drive "in 30 seconds" in virtual time.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caraway.exceptions import ImproperlyConfigured


class Clock(Protocol):
    """The two readings caraway needs: wall time for ETAs and a monotonic one for intervals."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to: ``advance`` wakes every sleeper it passes."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = start
        self._changed = threading.Condition()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._offset

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        with self._changed:
            while self._now < deadline:
                self._changed.wait(0.05)


SYSTEM_CLOCK = SystemClock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_iso(value: datetime) -> str:
    """ISO-8601 with offset, as Celery writes ``eta``/``expires``/``date_done``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def parse_iso(value: str | datetime | None) -> datetime | None:
    """Parse an ISO-8601 timestamp; naive values are taken as UTC, ``Z`` is accepted."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def to_timestamp(value: datetime | None) -> float | None:
    return None if value is None else parse_iso(value).timestamp()  # type: ignore[union-attr]


def absolute_time(
    value: float | int | timedelta | datetime | str | None, now: float
) -> datetime | None:
    """Turn seconds-from-now, a timedelta, a datetime or an ISO string into an aware datetime."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"expected seconds or a datetime, got {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(now + value, timezone.utc)
    if isinstance(value, timedelta):
        return datetime.fromtimestamp(now, timezone.utc) + value
    return parse_iso(value)


def timezone_for(value: str | tzinfo | None, enable_utc: bool = True) -> tzinfo:
    """The zone of the ``timezone`` setting: a name, a tzinfo, or None (UTC, or local time
    when ``enable_utc`` is off), as Celery's ``app.timezone``."""
    if isinstance(value, tzinfo):
        return value
    if value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(
                f"timezone {value!r} is not a known time zone; use an IANA name such as "
                "'Europe/London' or 'America/New_York'"
            ) from None
    return timezone.utc if enable_utc else local_timezone()


def local_timezone() -> tzinfo:
    """This machine's zone with its DST rules: ``$TZ``, else ``/etc/localtime``."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except OSError:
        local = datetime.now().astimezone().tzinfo
        return local or timezone.utc


def backoff_countdown(
    factor: int, retries: int, maximum: int | None = 600, full_jitter: bool = True
) -> int:
    """A retry delay (``retry_backoff``), as Celery computes it: ``factor * 2**retries`` whole
    seconds, capped at ``maximum``, jittered in ``[0, delay]``."""
    delay = factor * (1 << retries)
    if maximum is not None:
        delay = min(int(maximum), delay)
    if full_jitter:
        delay = random.randrange(delay + 1)
    return max(0, delay)
