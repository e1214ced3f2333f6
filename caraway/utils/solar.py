"""When the sun reaches an altitude at a place on a date: the NOAA solar-position equations.

Accurate to about a minute between the polar circles, which is what a periodic task needs;
written from the published equations (NOAA's "General Solar Position Calculations").
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

__all__ = ["EVENTS", "event_time"]

#: Celery's solar events: (altitude of the sun's centre in degrees, rising?); None: noon.
#: Sunrise/sunset use -0.833°: the upper limb touching the horizon, refraction included.
EVENTS: dict[str, tuple[float, bool] | None] = {
    "dawn_astronomical": (-18.0, True),
    "dawn_nautical": (-12.0, True),
    "dawn_civil": (-6.0, True),
    "sunrise": (-0.833, True),
    "solar_noon": None,
    "sunset": (-0.833, False),
    "dusk_civil": (-6.0, False),
    "dusk_nautical": (-12.0, False),
    "dusk_astronomical": (-18.0, False),
}


def _sun(moment: datetime) -> tuple[float, float]:
    """(equation of time in minutes, declination in radians) at ``moment`` (UTC)."""
    start = datetime(moment.year, 1, 1, tzinfo=timezone.utc)
    days_in_year = 366 if _leap(moment.year) else 365
    hours = moment.hour + moment.minute / 60 + moment.second / 3600
    gamma = 2 * math.pi / days_in_year * ((moment - start).days + (hours - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    return eqtime, decl


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def event_time(event: str, day: date, lat: float, lon: float) -> datetime | None:
    """The UTC time of ``event`` on ``day`` (a UTC date), or None when the sun never gets there.

    Two passes: the sun's position is taken at the first estimate, then again at the result.
    """
    midday = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
    estimate = midday
    for _ in range(2):
        minutes = _minutes_after_midnight(event, estimate, lat, lon)
        if minutes is None:
            return None
        estimate = midday - timedelta(hours=12) + timedelta(minutes=minutes)
    return estimate


def _minutes_after_midnight(event: str, moment: datetime, lat: float, lon: float) -> float | None:
    eqtime, decl = _sun(moment)
    noon = 720 - 4 * lon - eqtime
    spec = EVENTS[event]
    if spec is None:
        return noon
    altitude, rising = spec
    phi = math.radians(lat)
    cos_hour_angle = (math.sin(math.radians(altitude)) - math.sin(phi) * math.sin(decl)) / (
        math.cos(phi) * math.cos(decl)
    )
    if not -1.0 <= cos_hour_angle <= 1.0:
        return None  # polar day or night: the sun stays above or below that altitude
    hour_angle = math.degrees(math.acos(cos_hour_angle))
    return noon - 4 * hour_angle if rising else noon + 4 * hour_angle
