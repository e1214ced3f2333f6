"""Beat as real processes on the embedded SQLite file: ``worker -B`` running a 1-second task,
a schedule added at runtime through the API, state that survives a restart, and the
``beat schedules`` commands."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from beat_support import BeatProject, wait_until

from caraway import Celery
from caraway.beat import PeriodicTasks

APP = """
import time

from caraway import Celery

app = Celery("beat_app", broker="sqlite:///{db}")
app.conf.beat_schedule = {schedule}


@app.task
def stamp(path):
    with open(path, "a") as handle:
        handle.write(f"{{time.time()}}\\n")
"""


def make(beat_project: Callable[[str], BeatProject], tmp_path: Path, schedule: str) -> BeatProject:
    return beat_project(APP.format(db=tmp_path / "b.sqlite3", schedule=schedule))


def client(tmp_path: Path) -> Celery:
    return Celery("client", broker=f"sqlite:///{tmp_path / 'b.sqlite3'}", set_as_current=False)


def stamps(path: Path) -> list[float]:
    try:
        return [float(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def test_worker_b_runs_a_one_second_task_once_a_second(
    beat_project: Callable[[str], BeatProject], tmp_path: Path
) -> None:
    out = tmp_path / "stamps.txt"
    schedule = f'{{"stamp": {{"task": "beat_app.stamp", "schedule": 1.0, "args": ["{out}"]}}}}'
    project = make(beat_project, tmp_path, schedule)

    worker = project.spawn("worker", "-B", "-c", "2", "-l", "INFO", "-s", str(tmp_path / "s"))
    found = wait_until(lambda: len(stamps(out)) >= 5 and stamps(out), "five runs")
    project.stop(worker)

    gaps = [b - a for a, b in itertools.pairwise(found)]
    assert all(0.6 < gap < 1.4 for gap in gaps[:4]), gaps
    assert 3.6 < found[4] - found[0] < 4.4
    assert "meant for development" in project.log(0)


def test_a_schedule_added_through_the_api_runs_without_restarting_beat(
    beat_project: Callable[[str], BeatProject], tmp_path: Path
) -> None:
    project = make(beat_project, tmp_path, "{}")
    beat = project.spawn("beat", "-S", "database", "-l", "INFO")
    wait_until(lambda: "is the sender" in project.log(0), "beat to become the sender")
    app = client(tmp_path)
    periodic = PeriodicTasks(app)

    added_at = time.monotonic()
    periodic.add("fresh", "beat_app.stamp", 1.0, args=["unused"], options={"queue": "fresh"})
    wait_until(lambda: app.broker.size("fresh") >= 1, "the new schedule's first message")

    assert time.monotonic() - added_at < 3.5  # ~1 s to notice, 1 s interval
    assert wait_until(lambda: periodic.get("fresh").total_run_count, "the run count") >= 1
    assert beat.poll() is None
    app.close()


def test_state_survives_a_restart_and_missed_runs_are_sent_once(
    beat_project: Callable[[str], BeatProject], tmp_path: Path
) -> None:
    state_file = tmp_path / "state"
    schedule = '{"tick": {"task": "beat_app.stamp", "schedule": 1.0, "args": ["x"]}}'
    project = make(beat_project, tmp_path, schedule)
    app = client(tmp_path)

    def recorded() -> dict[str, float]:
        return json.loads(state_file.read_text())["entries"]["tick"]  # type: ignore[no-any-return]

    first = project.spawn("beat", "-s", str(state_file), "-l", "INFO")
    wait_until(lambda: app.broker.size("celery") >= 2, "two runs")
    assert project.stop(first) == 0
    before = recorded()
    sent_before = app.broker.size("celery")
    assert before["total_run_count"] == sent_before

    time.sleep(2.5)  # beat is down: two or three runs come due meanwhile
    second = project.spawn("beat", "-s", str(state_file), "-l", "INFO")
    wait_until(
        lambda: recorded()["total_run_count"] >= before["total_run_count"] + 2,
        "the catch-up run and one more",
    )
    assert project.stop(second) == 0
    after = recorded()

    sent = after["total_run_count"] - before["total_run_count"]
    steps = after["last_run_at"] - before["last_run_at"]
    assert abs(steps - round(steps)) < 1e-6  # still on the 1-second grid
    assert steps >= sent + 1  # two or more missed runs went out as one (else steps == sent)
    assert app.broker.size("celery") == after["total_run_count"]  # every run sent once
    app.close()


def test_beat_schedules_commands(
    beat_project: Callable[[str], BeatProject], tmp_path: Path
) -> None:
    project = make(beat_project, tmp_path, "{}")

    added = project.run(
        "beat", "schedules", "add", "nightly", "beat_app.stamp", "--crontab", "0 3 * * mon-fri",
        "-a", '["report"]', "-Q", "reports",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert project.run("beat", "schedules", "disable", "nightly").returncode == 0
    listed = project.run("beat", "schedules", "list", "--json")
    (item,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert item["schedule"] == {"crontab": {"minute": "0", "hour": "3", "day_of_week": "mon-fri",
                                            "day_of_month": "*", "month_of_year": "*"}}  # fmt: skip
    assert (item["enabled"], item["args"], item["options"]) == (
        False,
        ["report"],
        {"queue": "reports"},
    )
    assert "nightly: beat_app.stamp" in project.run("beat", "schedules", "list").stdout

    bad = project.run("beat", "schedules", "add", "x", "beat_app.stamp", "--crontab", "0 25 * * *")
    assert bad.returncode != 0
    assert "crontab hour: 25" in bad.stderr
    assert project.run("beat", "schedules", "remove", "nightly").returncode == 0
    missing = project.run("beat", "schedules", "remove", "nightly")
    assert missing.returncode == 1
    assert "no stored schedule named 'nightly'" in missing.stderr
    assert project.run("beat", "schedules", "list").stdout.strip() == "No stored schedules."


def test_beat_stops_on_sigterm_and_hands_the_lease_over(
    beat_project: Callable[[str], BeatProject], tmp_path: Path
) -> None:
    project = make(beat_project, tmp_path, '{"t": {"task": "beat_app.stamp", "schedule": 60}}')
    pidfile = tmp_path / "beat.pid"
    first = project.spawn("beat", "-S", "database", "-l", "INFO", "--pidfile", str(pidfile))
    wait_until(lambda: "is the sender" in project.log(0), "the first beat to send")
    project.spawn("beat", "-S", "database", "-l", "INFO")
    assert pidfile.read_text().strip() == str(first.pid)

    assert project.stop(first, signal.SIGTERM) == 0
    wait_until(lambda: "is the sender" in project.log(1), "the second beat to take over", 5.0)
    assert not pidfile.exists()
