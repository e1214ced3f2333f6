"""Celery's schedules on an injected clock: crontab grammar, DST days in two zones, month
ends, leap days, intervals, solar events, ``is_due`` and ``remaining_estimate``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from caraway import Caraway
from caraway.schedules import ParseException, crontab, maybe_schedule, schedule, solar, use_clock

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def app_in(zone: str | None, enable_utc: bool = True) -> Caraway:
    return Caraway("sched", broker="memory://", timezone=zone, enable_utc=enable_utc,
                   set_as_current=False)  # fmt: skip


def runs(sched: crontab | solar, start: datetime, end: datetime) -> list[datetime]:
    """Every run time in (start, end], in UTC: each the first after the one before."""
    found, last = [], start
    while True:
        upcoming = sched._next_after(last)
        assert upcoming is not None
        if upcoming > end:
            return found
        found.append(upcoming.astimezone(UTC))
        last = upcoming


def around(day: datetime) -> tuple[datetime, datetime]:
    """From the start of the day before to the end of the day after (local midnights)."""
    return day - timedelta(days=1), day + timedelta(days=2)


# --- grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "spec", "expected"),
    [
        ("minute", "*/15", {0, 15, 30, 45}),
        ("minute", "5,10-12", {5, 10, 11, 12}),
        ("minute", "0-30/10", {0, 10, 20, 30}),
        ("minute", 7, {7}),
        ("minute", [1, "2", "40-41"], {1, 2, 40, 41}),
        ("hour", "9-17", set(range(9, 18))),
        ("hour", "22-2", {22, 23, 0, 1, 2}),
        ("hour", "*/6", {0, 6, 12, 18}),
        ("day_of_week", "mon-fri", {1, 2, 3, 4, 5}),
        ("day_of_week", "sun,wed", {0, 3}),
        ("day_of_week", "1-5", {1, 2, 3, 4, 5}),
        ("day_of_week", "7", {0}),
        ("day_of_week", 0, {0}),
        ("day_of_week", "5-7", {5, 6, 0}),
        ("day_of_week", "fri-mon", {5, 6, 0, 1}),
        ("day_of_week", "*/2", {0, 2, 4, 6}),
        ("day_of_week", "Monday", {1}),
        ("day_of_week", "sunday", {0}),
        ("day_of_week", "thu,fri", {4, 5}),
        ("hour", "*/2,*/3", {0, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15, 16, 18, 20, 21, 22}),
        ("hour", "*/3,8-17", {0, 3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 21}),
        ("day_of_month", "2-30/2", set(range(2, 31, 2))),
        ("day_of_month", "1-7,15-21", {*range(1, 8), *range(15, 22)}),
        ("day_of_month", "1,15", {1, 15}),
        ("day_of_month", "*/10", {1, 11, 21, 31}),
        ("month_of_year", "jan-mar", {1, 2, 3}),
        ("month_of_year", "*/3", {1, 4, 7, 10}),
        ("month_of_year", "dec", {12}),
    ],
)
def test_crontab_reads_celerys_grammar(field: str, spec: object, expected: set[int]) -> None:
    cron = crontab(**{field: spec})

    assert getattr(cron, field) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": "60"}, r"crontab minute: 60 .* out of range; expected a number 0-59"),
        ({"hour": "24"}, r"crontab hour: 24"),
        ({"day_of_week": "fooday"}, r"crontab day_of_week: 'fooday' in 'fooday' is not"),
        ({"day_of_week": "8"}, r"crontab day_of_week: 8 .*0-7"),
        ({"day_of_month": "0"}, r"crontab day_of_month: 0 "),
        ({"month_of_year": "13"}, r"crontab month_of_year: 13 "),
        ({"minute": "*/0"}, r"crontab minute: the step in '\*/0' must be a whole number"),
        ({"minute": "*/x"}, r"crontab minute: the step"),
        ({"minute": ""}, r"crontab minute: empty value"),
        ({"minute": "1,,2"}, r"crontab minute: cannot read ''"),
        ({"hour": "mon"}, r"crontab hour: 'mon' in 'mon' is not a number 0-23"),
        ({"minute": "-5"}, r"crontab minute: cannot read '-5'"),
        ({"day_of_month": 30, "month_of_year": 2}, r"day_of_month 30 .* never happens"),
        ({"minute": 1.5}, r"crontab minute: 1.5 is not a string"),
    ],
)
def test_crontab_errors_name_the_field_and_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParseException, match=message):
        crontab(**kwargs)  # type: ignore[arg-type]


def test_parse_errors_are_value_errors_as_in_celery() -> None:
    with pytest.raises(ValueError, match="minute"):
        crontab(minute="61")


def test_from_string_reads_the_five_cron_fields_in_cron_order() -> None:
    cron = crontab.from_string("*/15 9-17 1 jan mon-fri")

    assert cron == crontab("*/15", "9-17", "mon-fri", "1", "jan")
    assert repr(cron) == "<crontab: */15 9-17 1 jan mon-fri (m/h/dM/MY/d)>"
    with pytest.raises(ParseException, match="needs 5 fields"):
        crontab.from_string("* * *")


# --- crontab times ---------------------------------------------------------------------------


def test_every_fifteen_minutes_on_weekdays_skips_the_weekend() -> None:
    cron = crontab("*/15", "9-17", "mon-fri", app=app_in("UTC"))
    friday_evening = datetime(2026, 5, 1, 17, 45, tzinfo=UTC)  # a Friday

    assert cron._next_after(friday_evening) == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def test_day_of_month_and_day_of_week_must_both_match_as_in_celery() -> None:
    cron = crontab(0, 0, day_of_week="fri", day_of_month="13", app=app_in("UTC"))

    found = runs(cron, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))

    assert [d.date().isoformat() for d in found] == ["2026-02-13", "2026-03-13", "2026-11-13"]


def test_month_ends_skip_months_without_the_day() -> None:
    cron = crontab(0, 12, day_of_month=31, app=app_in("UTC"))

    found = runs(cron, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))

    assert [d.month for d in found] == [1, 3, 5, 7, 8, 10, 12]


def test_leap_day_runs_only_in_leap_years() -> None:
    cron = crontab(0, 0, day_of_month=29, month_of_year=2, app=app_in("UTC"))

    found = runs(cron, datetime(2025, 1, 1, tzinfo=UTC), datetime(2033, 1, 1, tzinfo=UTC))

    assert [d.date().isoformat() for d in found] == ["2028-02-29", "2032-02-29"]


def test_crontab_reads_the_wall_clock_of_the_app_timezone() -> None:
    cron = crontab(0, 9, app=app_in("America/New_York"))

    upcoming = cron._next_after(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))

    assert upcoming.tzinfo == NEW_YORK
    assert upcoming.astimezone(UTC) == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        # US spring forward, 2026-03-08: 02:00 EST -> 03:00 EDT. 02:30 runs at 03:00 EDT.
        ("America/New_York", 8, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
        # EU spring forward, 2026-03-29: 02:00 CET -> 03:00 CEST. 02:30 runs at 03:00 CEST.
        ("Europe/Berlin", 29, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ],
)
def test_a_wall_time_skipped_by_spring_forward_runs_once(
    zone: str, day: int, expected_utc: datetime
) -> None:
    cron = crontab(30, 2, app=app_in(zone))
    tz = ZoneInfo(zone)

    found = runs(cron, *around(datetime(2026, 3, day, tzinfo=tz)))

    on_the_day = [d for d in found if d.astimezone(tz).day == day]
    assert on_the_day == [expected_utc]
    assert len(found) == 3  # the day before, the day, the day after


@pytest.mark.parametrize(
    ("zone", "month", "day", "expected_utc"),
    [
        # US fall back, 2026-11-01: 01:00-02:00 happens twice. 01:30 runs at 01:30 EDT only.
        ("America/New_York", 11, 1, datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        # EU fall back, 2026-10-25: 02:00-03:00 happens twice. 02:30 runs at 02:30 CEST only.
        ("Europe/Berlin", 10, 25, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
)
def test_a_wall_time_repeated_by_fall_back_runs_once(
    zone: str, month: int, day: int, expected_utc: datetime
) -> None:
    tz = ZoneInfo(zone)
    hour = 1 if zone == "America/New_York" else 2
    cron = crontab(30, hour, app=app_in(zone))

    found = runs(cron, *around(datetime(2026, month, day, tzinfo=tz)))

    assert [d for d in found if d.astimezone(tz).day == day] == [expected_utc]
    assert len(found) == 3


def test_hourly_jobs_keep_running_through_the_repeated_hour() -> None:
    cron = crontab(0, app=app_in("America/New_York"))

    found = runs(
        cron, datetime(2026, 11, 1, 3, 30, tzinfo=UTC), datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    )

    # 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST, 03:00 EST: one run per real hour.
    assert [d.hour for d in found] == [4, 5, 6, 7, 8]


def test_hourly_jobs_jump_the_skipped_hour_once() -> None:
    cron = crontab("*/30", app=app_in("Europe/Berlin"))

    found = runs(
        cron, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    )

    walls = [d.astimezone(BERLIN).strftime("%H:%M") for d in found]
    # 01:30 CET, then 02:00 and 02:30 (skipped) collapse into 03:00 CEST, then 03:30, 04:00.
    assert walls == ["01:30", "03:00", "03:30", "04:00"]


# --- is_due and remaining_estimate on an injected clock ----------------------------------


def test_crontab_is_due_and_remaining_estimate() -> None:
    now = datetime(2026, 5, 4, 10, 7, 30, tzinfo=UTC)
    cron = crontab("*/15", nowfun=lambda: now, app=app_in("UTC"))

    assert cron.remaining_estimate(datetime(2026, 5, 4, 10, 0, tzinfo=UTC)) == timedelta(
        minutes=7, seconds=30
    )
    assert cron.is_due(datetime(2026, 5, 4, 10, 0, tzinfo=UTC)) == (False, 450.0)
    # Last ran at 09:45: the 10:00 run is due; ask again at 10:15.
    assert cron.is_due(datetime(2026, 5, 4, 9, 45, tzinfo=UTC)) == (True, 450.0)


def test_crontab_due_time_is_the_latest_missed_run() -> None:
    now = datetime(2026, 5, 4, 10, 7, tzinfo=UTC)
    cron = crontab("*/15", app=app_in("UTC"))

    assert cron.due_time(datetime(2026, 5, 3, 0, 0, tzinfo=UTC), now) == datetime(
        2026, 5, 4, 10, 0, tzinfo=UTC
    )


def test_cron_starting_deadline_drops_runs_missed_for_too_long() -> None:
    app = app_in("UTC")
    app.conf.beat_cron_starting_deadline = 120
    clock = [datetime(2026, 5, 4, 10, 1, tzinfo=UTC)]
    cron = crontab(0, nowfun=lambda: clock[0], app=app)
    last = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

    assert cron.is_due(last).is_due  # the 10:00 run is 60 s late: within the deadline
    clock[0] = datetime(2026, 5, 4, 10, 5, tzinfo=UTC)
    assert cron.is_due(last) == (False, 55 * 60)  # 5 min late: dropped; next at 11:00
    clock[0] = datetime(2026, 5, 4, 11, 0, 30, tzinfo=UTC)
    assert cron.is_due(last).is_due


def test_interval_is_due_after_run_every() -> None:
    last = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    clock = [last + timedelta(seconds=4)]
    every = schedule(10, nowfun=lambda: clock[0], app=app_in("UTC"))

    assert every.remaining_estimate(last) == timedelta(seconds=6)
    assert every.is_due(last) == (False, 6.0)
    clock[0] = last + timedelta(seconds=10)
    assert every.is_due(last) == (True, 10.0)


def test_interval_counts_real_time_across_dst() -> None:
    last = datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK)  # EST, 30 min before the jump
    every = schedule(timedelta(hours=1), nowfun=lambda: last + timedelta(minutes=59),
                     app=app_in("America/New_York"))  # fmt: skip

    assert every.remaining_estimate(last) == timedelta(minutes=1)


def test_interval_due_time_keeps_to_the_grid_and_collapses_missed_runs() -> None:
    last = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    every = schedule(10, app=app_in("UTC"))

    assert every.due_time(last, last + timedelta(seconds=10.4)) == last + timedelta(seconds=10)
    assert every.due_time(last, last + timedelta(seconds=95)) == last + timedelta(seconds=90)


def test_relative_interval_rounds_to_its_resolution() -> None:
    last = datetime(2026, 1, 1, 12, 20, 31, tzinfo=UTC)
    at_one = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    hourly = schedule(timedelta(hours=1), True, nowfun=lambda: at_one, app=app_in("UTC"))

    assert hourly.remaining_estimate(last) == timedelta(0)
    assert hourly.is_due(last).is_due


def test_interval_repr_and_validation() -> None:
    assert repr(schedule(10)) == "<freq: 10.00 seconds>"
    assert repr(schedule(timedelta(hours=2))) == "<freq: 2.00 hours>"
    assert schedule(10) == schedule(timedelta(seconds=10))
    with pytest.raises(ValueError, match="above zero"):
        schedule(0)
    with pytest.raises(TypeError, match="seconds or a timedelta"):
        schedule("10")  # type: ignore[arg-type]


def test_maybe_schedule_turns_numbers_and_timedeltas_into_schedules() -> None:
    assert maybe_schedule(30) == schedule(30)
    assert maybe_schedule(timedelta(minutes=1)) == schedule(60)
    cron = crontab()
    assert maybe_schedule(cron) is cron


def test_use_clock_drives_schedules_without_nowfun() -> None:
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    every = schedule(5, app=app_in("UTC"))

    with use_clock(lambda: moment):
        assert every.now() == moment
        assert every.is_due(moment - timedelta(seconds=5)).is_due


def test_naive_times_are_utc_and_local_time_applies_without_enable_utc() -> None:
    cron = crontab(0, 0, app=app_in("Europe/Berlin"))
    naive = datetime(2026, 7, 1, 12, 0)

    assert cron.maybe_make_aware(naive) == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert app_in(None).timezone == UTC


# --- solar ------------------------------------------------------------------------------------


def test_solar_sunrise_and_sunset_match_published_times() -> None:
    app = app_in("UTC")
    # New York, 2026-06-21: sunrise 05:25 EDT (09:25 UTC), sunset 20:31 EDT (00:31 UTC).
    rise = solar("sunrise", 40.7128, -74.0060, app=app)._next_after(
        datetime(2026, 6, 21, 0, 0, tzinfo=UTC)
    )
    assert rise is not None
    assert abs(rise - datetime(2026, 6, 21, 9, 25, tzinfo=UTC)) < timedelta(minutes=3)
    # London, 2026-12-21: sunset 15:54 GMT.
    dusk = solar("sunset", 51.5074, -0.1278, app=app)._next_after(
        datetime(2026, 12, 21, 0, 0, tzinfo=UTC)
    )
    assert dusk is not None
    assert abs(dusk - datetime(2026, 12, 21, 15, 54, tzinfo=UTC)) < timedelta(minutes=3)


def test_solar_is_due_once_the_event_has_passed() -> None:
    now = datetime(2026, 6, 21, 13, 0, tzinfo=UTC)  # noon at 0°, 0° is 12:01:42 UTC
    noon = solar("solar_noon", 0.0, 0.0, nowfun=lambda: now, app=app_in("UTC"))

    due, next_check = noon.is_due(datetime(2026, 6, 20, 13, 0, tzinfo=UTC))

    assert due
    assert 23 * 3600 < next_check < 24 * 3600 + 600


def test_solar_in_polar_night_is_never_due() -> None:
    now = datetime(2026, 12, 21, 12, 0, tzinfo=UTC)
    rise = solar("sunrise", 89.0, 0.0, nowfun=lambda: now, app=app_in("UTC"))

    assert rise.is_due(now - timedelta(days=1)).is_due is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("noonish", 0, 0), "unknown event 'noonish'"),
        (("sunset", 91, 0), "latitude 91"),
        (("sunset", 0, -181), "longitude -181"),
    ],
)
def test_solar_rejects_bad_events_and_places(args: tuple[str, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solar(*args)
