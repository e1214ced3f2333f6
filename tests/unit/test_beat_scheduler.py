"""The beat scheduler in virtual time: entries, leases between beats, restarts, runtime
changes and DST, with every send checked in the broker (no sleeping)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from caraway import Caraway
from caraway.beat import PeriodicTasks, PersistentScheduler, Scheduler, SchedulingError
from caraway.beat.entry import entries_from_config
from caraway.beat.periodic import ScheduleExists, ScheduleNotFound
from caraway.engines.base.beat_store import EntryState
from caraway.engines.base.broker import Outgoing
from caraway.engines.memory.beat_store import MemoryStore
from caraway.exceptions import ImproperlyConfigured
from caraway.schedules import crontab, schedule
from caraway.utils.time import FakeClock

UTC = timezone.utc
START = datetime(2026, 5, 4, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock)


def run_for(clock: FakeClock, seconds: float, *beats: Scheduler, step: float = 0.25) -> None:
    """Tick every beat every ``step`` seconds of virtual time."""
    end = clock.time() + seconds
    while clock.time() < end - 1e-9:
        for beat in beats:
            beat.tick()
        clock.advance(step)


def sent_at(published: list[Outgoing]) -> list[float]:
    """When each message was made (its ``sent`` time), relative to START, from the header."""
    return [
        round(datetime.fromisoformat(o.message.headers["eta"]).timestamp() - START, 2)
        if o.message.headers.get("eta")
        else -1.0
        for o in published
    ]


# --- beat_schedule and add_periodic_task -------------------------------------------------


def test_beat_schedule_entries_become_schedules(app: Caraway) -> None:
    app.conf.beat_schedule = {
        "every-10": {"task": "proj.add", "schedule": 10.0, "args": (1, 2)},
        "every-minute": {"task": "proj.add", "schedule": timedelta(minutes=1), "relative": True},
        "nightly": {"task": "proj.report", "schedule": crontab(0, 3), "kwargs": {"x": 1},
                    "options": {"queue": "reports", "priority": 5}},
    }  # fmt: skip

    entries = entries_from_config(app)

    assert entries["every-10"].schedule == schedule(10)
    assert entries["every-10"].args == (1, 2)
    assert entries["every-minute"].schedule == schedule(60, relative=True)
    assert entries["nightly"].options == {"queue": "reports", "priority": 5}
    assert entries["nightly"].kwargs == {"x": 1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": 5}, "'bad' needs 'task'"),
        ({"task": "t"}, "'bad' needs 'schedule'"),
        ({"task": "t", "schedule": "daily"}, "schedule 'daily' is not seconds"),
        ({"task": "t", "schedule": -1}, "must be above zero"),
        ({"task": "t", "schedule": 5, "arg": [1]}, r"unknown key\(s\) arg"),
        ({"task": "t", "schedule": 5, "args": "1,2"}, "'args' must be a list"),
    ],
)
def test_a_malformed_entry_is_an_error_naming_it(
    app: Caraway, spec: dict[str, object], message: str
) -> None:
    app.conf.beat_schedule = {"bad": spec}

    with pytest.raises(ImproperlyConfigured, match=message):
        entries_from_config(app)


def test_add_periodic_task_from_on_after_configure(app: Caraway) -> None:
    @app.task
    def ping(word: str) -> str:
        return word

    @app.on_after_configure.connect
    def setup(sender: Caraway, **kwargs: object) -> None:
        sender.add_periodic_task(10.0, ping.s("hello"), name="ping every 10")
        sender.add_periodic_task(crontab(0, 7), ping.s("morning"), queue="q1")

    app.finalize()

    table = app.conf.beat_schedule
    assert table["ping every 10"]["schedule"] == schedule(10)
    assert table["ping every 10"]["args"] == ("hello",)
    morning = next(v for k, v in table.items() if k != "ping every 10")
    assert morning["options"] == {"queue": "q1"}
    assert morning["task"] == ping.name


# --- sending on time ------------------------------------------------------------------------


def test_an_interval_entry_is_sent_every_interval(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {
        "tick": {"task": "proj.tick", "schedule": 10, "args": [7], "options": {"queue": "q"}}
    }
    beat = Scheduler(app, clock=clock, store=store)

    run_for(clock, 60.1, beat)

    assert len(published) == 6
    assert {o.queue for o in published} == {"q"}
    assert {o.message.headers["task"] for o in published} == {"proj.tick"}
    recorded = store.states()["tick"]
    assert recorded == EntryState(START + 60, 6)


def test_a_send_that_fails_is_a_scheduling_error_naming_the_entry(
    app: Caraway, clock: FakeClock, store: MemoryStore
) -> None:
    app.conf.beat_schedule = {
        "bad": {"task": "proj.tick", "schedule": 10, "options": {"priority": "high"}}
    }
    beat = Scheduler(app, clock=clock, store=store)

    with pytest.raises(SchedulingError, match="cannot send scheduled task bad") as raised:
        beat.apply_async(beat.data["bad"])

    assert raised.value.__cause__ is not None


def test_options_reach_the_message(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {
        "t": {"task": "proj.t", "schedule": 1, "options": {"priority": 3, "expires": 30}}
    }
    beat = Scheduler(app, clock=clock, store=store)

    run_for(clock, 1.1, beat)

    (message,) = [o.message for o in published]
    assert message.headers["expires"] is not None
    assert message.properties["priority"] == 3


def test_runs_keep_to_the_grid_whatever_the_tick_rate(
    app: Caraway, clock: FakeClock, store: MemoryStore
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 1}}
    beat = Scheduler(app, clock=clock, store=store)

    run_for(clock, 10.35, beat, step=0.3)  # ticks at 0, 0.3, ..., 10.2

    assert store.states()["t"] == EntryState(START + 10, 10)


def test_the_tick_says_how_long_to_sleep(
    app: Caraway, clock: FakeClock, store: MemoryStore, tmp_path: Path
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 30}}
    beat = Scheduler(app, clock=clock, store=store, max_interval=20, lease_ttl=90)
    persistent = PersistentScheduler(
        app, clock=clock, max_interval=20, schedule_filename=str(tmp_path / "s")
    )

    assert beat.tick() == pytest.approx(1.0)  # the next look for schedules changed at runtime
    # A file holds no runtime schedules and its lock needs no renewal: sleep until due,
    # at most max_interval.
    assert persistent.tick() == pytest.approx(20.0)
    clock.advance(20.0)
    assert persistent.tick() == pytest.approx(10.0)
    persistent.close()


# --- one sender among many ------------------------------------------------------------------


def test_only_one_of_three_beats_sends(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 1}}
    beats = [Scheduler(app, clock=clock, store=store, lease_ttl=2) for _ in range(3)]

    run_for(clock, 20.1, *beats)

    assert [b.is_sender for b in beats].count(True) == 1
    assert len(published) == 20


def test_a_standby_takes_over_from_a_dead_sender_without_missing_or_doubling(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 5}}
    first, second = (Scheduler(app, clock=clock, store=store, lease_ttl=2) for _ in range(2))
    run_for(clock, 12.1, first, second)
    assert first.is_sender
    assert len(published) == 2  # at +5 and +10

    run_for(clock, 20.0, second)  # the sender stops ticking: it died

    assert second.is_sender
    assert len(published) == 6  # +15, +20, +25, +30: none missed, none twice
    assert store.states()["t"] == EntryState(START + 30, 6)


def test_a_beat_that_lost_its_lease_cannot_record(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 1}}
    paused = Scheduler(app, clock=clock, store=store, lease_ttl=2)
    other = Scheduler(app, clock=clock, store=store, lease_ttl=2)
    run_for(clock, 0.5, paused, other)
    run_for(clock, 5.0, other)  # `paused` froze (a long GC pause); `other` took over
    before = len(published)

    paused.tick()  # it wakes up believing it still sends

    assert not paused.is_sender
    assert len(published) == before
    assert store.save_states(paused.owner, {"t": EntryState(0.0, 99)}) is False


# --- restarts ----------------------------------------------------------------------------------


def test_runs_missed_while_beat_was_down_are_sent_once(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 10}}
    beat = Scheduler(app, clock=clock, store=store)
    run_for(clock, 20.1, beat)
    beat.close()
    assert len(published) == 2

    clock.advance(95)  # down for 95 s: 9 runs missed
    restarted = Scheduler(app, clock=clock, store=store)
    run_for(clock, 0.5, restarted)

    assert len(published) == 3  # one catch-up run, not nine
    assert store.states()["t"] == EntryState(START + 110, 3)  # back on the grid
    run_for(clock, 10.0, restarted)
    assert len(published) == 4


def test_persistent_scheduler_keeps_runs_in_its_file(
    app: Caraway, clock: FakeClock, tmp_path: Path, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 10}}
    path = tmp_path / "celerybeat-schedule"
    beat = PersistentScheduler(app, clock=clock, schedule_filename=str(path))
    standby = PersistentScheduler(app, clock=clock, schedule_filename=str(path))
    run_for(clock, 30.1, beat, standby)
    beat.close()

    assert len(published) == 3
    document = json.loads(path.read_text())
    assert document["entries"]["t"] == {"last_run_at": START + 30, "total_run_count": 3}

    run_for(clock, 10.0, standby)  # the lock was released: the standby continues
    assert len(published) == 4
    standby.close()


def test_an_unreadable_state_file_starts_fresh_with_a_warning(
    app: Caraway, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 10}}
    path = tmp_path / "celerybeat-schedule"
    path.write_bytes(b"\x00shelve")
    beat = PersistentScheduler(app, clock=clock, schedule_filename=str(path))

    with caplog.at_level(logging.WARNING, logger="caraway.beat"):
        beat.tick()
    beat.close()

    assert "unreadable" in caplog.text
    assert json.loads(path.read_text())["entries"]["t"]["total_run_count"] == 0


# --- DST through the scheduler ------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "hour", "start"),
    [
        ("America/New_York", 2, datetime(2026, 3, 8, 0, 0)),  # spring forward: 02:30 is skipped
        ("America/New_York", 1, datetime(2026, 11, 1, 0, 0)),  # fall back: 01:30 happens twice
        ("Europe/Berlin", 2, datetime(2026, 3, 29, 0, 0)),
        ("Europe/Berlin", 2, datetime(2026, 10, 25, 0, 0)),
    ],
)
def test_a_daily_job_runs_once_on_dst_days(
    app: Caraway, store: MemoryStore, published: list[Outgoing], zone: str, hour: int,
    start: datetime,
) -> None:  # fmt: skip
    app.conf.timezone = zone
    app.conf.beat_schedule = {"daily": {"task": "proj.daily", "schedule": crontab(30, hour)}}
    clock = FakeClock(start.replace(tzinfo=ZoneInfo(zone)).timestamp())
    beat = Scheduler(app, clock=clock, store=MemoryStore(clock))

    run_for(clock, 24 * 3600, beat, step=60)

    assert len(published) == 1


# --- schedules changed at runtime -------------------------------------------------------------


def test_a_schedule_added_at_runtime_is_picked_up_within_a_second(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    beat = Scheduler(app, clock=clock, store=store)
    run_for(clock, 3.0, beat)
    periodic = PeriodicTasks(app, store=store)

    periodic.add("fresh", "proj.fresh", 2, args=[1])
    run_for(clock, 1.0 + 2.0 + 0.3, beat)

    assert [o.message.headers["task"] for o in published] == ["proj.fresh"]
    assert periodic.get("fresh").total_run_count == 1


def test_disable_enable_update_and_remove_take_effect(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    periodic = PeriodicTasks(app, store=store)
    periodic.add("job", "proj.job", 1)
    beat = Scheduler(app, clock=clock, store=store)
    run_for(clock, 3.1, beat)
    assert len(published) == 3

    periodic.disable("job")
    run_for(clock, 5.0, beat)
    assert len(published) <= 4  # at most the run already due when the change landed
    stopped_at = len(published)
    run_for(clock, 5.0, beat)
    assert len(published) == stopped_at

    periodic.enable("job")
    periodic.update("job", schedule=timedelta(seconds=2), args=[9])
    run_for(clock, 5.0, beat)
    assert len(published) > stopped_at
    assert periodic.get("job").args == (9,)

    periodic.remove("job")
    run_for(clock, 1.5, beat)
    count = len(published)
    run_for(clock, 5.0, beat)
    assert len(published) == count
    with pytest.raises(ScheduleNotFound, match="no stored schedule named 'job'"):
        periodic.get("job")


def test_one_off_start_time_and_expiry(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    now = datetime.fromtimestamp(START, UTC)
    periodic = PeriodicTasks(app, store=store)
    periodic.add("once", "proj.once", 1, one_off=True)
    periodic.add("later", "proj.later", 1, start_time=now + timedelta(seconds=5))
    periodic.add("ending", "proj.ending", 1, expires=now + timedelta(seconds=3.5))
    beat = Scheduler(app, clock=clock, store=store)

    run_for(clock, 10.1, beat)

    counts = {name: 0 for name in ("proj.once", "proj.later", "proj.ending")}
    for outgoing in published:
        counts[outgoing.message.headers["task"]] += 1
    assert counts == {"proj.once": 1, "proj.later": 6, "proj.ending": 3}
    assert periodic.get("once").total_run_count == 1


def test_periodic_tasks_api_validates_before_storing(app: Caraway, store: MemoryStore) -> None:
    periodic = PeriodicTasks(app, store=store)
    periodic.add("a", "proj.a", crontab("*/5"))

    with pytest.raises(ScheduleExists, match="'a' exists"):
        periodic.add("a", "proj.a", 5)
    with pytest.raises(ValueError, match="crontab minute: 99"):
        periodic.add("b", "proj.b", crontab("99"))
    with pytest.raises(ImproperlyConfigured, match=r"solar schedules, not 'often'"):
        periodic.add("b", "proj.b", "often")
    with pytest.raises(ValueError, match="cannot change colour"):
        periodic.update("a", colour="red")
    assert [p.name for p in periodic.list()] == ["a"]
    assert periodic.get("a").schedule == crontab("*/5")


def test_a_sender_whose_lease_lapsed_rereads_the_runs_before_sending(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 1}}
    first = Scheduler(app, clock=clock, store=store, lease_ttl=2)
    other = Scheduler(app, clock=clock, store=store, lease_ttl=2)
    run_for(clock, 2.1, first, other)
    run_for(clock, 3.0, other)  # `first` could not reach the store; `other` sent meanwhile
    other.close()  # ... and left
    sent = len(published)

    run_for(clock, 0.3, first)  # `first` gets the lease again

    assert first.is_sender
    assert len(published) == sent  # nothing re-sent: it read what `other` recorded
    assert first.schedule["t"].total_run_count == store.states()["t"].total_run_count


# --- choosing the scheduler -------------------------------------------------------------------


def test_scheduler_names_and_celerys_class_paths_resolve() -> None:
    from caraway.beat import DatabaseScheduler
    from caraway.beat.service import scheduler_class

    assert scheduler_class("persistent") is PersistentScheduler
    assert scheduler_class("database") is DatabaseScheduler
    assert scheduler_class("celery.beat:PersistentScheduler") is PersistentScheduler
    assert scheduler_class("caraway.beat:Scheduler") is Scheduler
    with pytest.raises(ImproperlyConfigured, match=r"cannot load the beat scheduler 'nope\.mod:X'"):
        scheduler_class("nope.mod:X")
    with pytest.raises(ImproperlyConfigured, match=r"is not a caraway\.beat\.Scheduler"):
        scheduler_class("caraway.app:Caraway")


def test_the_database_scheduler_needs_a_backend_that_stores(app: Caraway) -> None:
    from caraway.beat import DatabaseScheduler

    app.conf.result_backend = "disabled://"
    app.close()

    with pytest.raises(ImproperlyConfigured, match=r"cannot hold them\. Set result_backend"):
        DatabaseScheduler(app)


def test_the_service_runs_until_stopped(app: Caraway, published: list[Outgoing]) -> None:
    import threading

    from caraway.beat import Service

    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 0.05}}
    service = Service(app, scheduler_cls="caraway.beat:Scheduler")
    thread = threading.Thread(target=service.start)
    thread.start()
    deadline = time.monotonic() + 10
    while len(published) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    service.stop(wait=True)
    thread.join(10)

    assert len(published) >= 2
    assert not thread.is_alive()
    assert not service.scheduler.is_sender  # the lease was given up


def test_a_subclass_may_make_its_own_entries(
    app: Caraway, clock: FakeClock, store: MemoryStore, published: list[Outgoing]
) -> None:
    from caraway.beat import ScheduleEntry

    class Custom(Scheduler):
        def setup_schedule(self) -> None:
            self.data = {"own": ScheduleEntry("own", "proj.own", schedule(2, app=self.app))}

    beat = Custom(app, clock=clock, store=store)
    run_for(clock, 4.1, beat)

    assert [o.message.headers["task"] for o in published] == ["proj.own", "proj.own"]


def test_beat_sync_every_batches_writes_of_the_state_file(
    app: Caraway, clock: FakeClock, tmp_path: Path
) -> None:
    app.conf.beat_schedule = {"t": {"task": "proj.t", "schedule": 1}}
    app.conf.beat_sync_every = 3
    path = tmp_path / "state"
    beat = PersistentScheduler(app, clock=clock, schedule_filename=str(path))

    def written() -> int:
        return int(json.loads(path.read_text())["entries"]["t"]["total_run_count"])

    run_for(clock, 2.1, beat)  # the first record (count 0) and two runs: three writes due
    assert written() == 2
    run_for(clock, 2.0, beat)
    assert written() == 2  # two more runs, not yet written
    beat.close()
    assert written() == 4  # closing writes what is pending
