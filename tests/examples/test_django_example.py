"""examples/django as its README runs it: a worker and two beats on the project, results in the
Django database, a periodic task added in the admin through a real browser.

PostgreSQL (a database of its own, dropped afterwards) when the server is there, and always
in CI; a SQLite file on a laptop without it. Screenshots of the admin go to
``artefacts/django-admin/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from importlib.util import find_spec
from pathlib import Path

import pytest
from django_example_support import ADMIN, ROOT, WAIT, Example
from polling import poll
from services import free_port, missing, postgresql_database

#: Found, not imported: importing Django here would load it for every test of the session.
pytestmark = pytest.mark.skipif(
    find_spec("django") is None, reason="Django is not installed (the test extra has it)"
)

SCREENSHOTS = ROOT / "artefacts" / "django-admin"


def _postgresql_here() -> bool:
    if os.environ.get("CI", "").lower() == "true":
        return True  # CI must have it: postgresql_database() fails the test without it
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The project migrated, with a superuser, a worker and two beats running."""
    with ExitStack() as stack:
        database = None
        if _postgresql_here():
            database = stack.enter_context(postgresql_database("caraway_example"))
        project = Example(tmp_path_factory.mktemp("django-example"), database)
        stack.callback(project.close)
        project.manage("migrate", "-v0")
        project.manage("createsuperuser", "--noinput", "--username", ADMIN[0],
                       "--email", "admin@example.com")  # fmt: skip
        project.start("worker", "-m", "caraway", "-A", "proj", "worker", "-l", "INFO", "-c", "2")
        for _ in range(2):  # two beats; the settings name django_celery_beat's scheduler
            project.start("beat", "-m", "caraway", "-A", "proj", "beat", "-l", "INFO")
        yield project


@pytest.mark.timeout(120)
def test_a_finished_task_is_a_row_of_the_django_database(example: Example) -> None:
    answer = example.python(
        "from orders.tasks import add\nprint(json.dumps(add.delay(2, 3).get(timeout=30)))"
    )

    assert answer == 5
    rows = example.query(
        "SELECT status, result, task_args, worker FROM caraway_django_taskresult"
        " WHERE task_name = 'orders.tasks.add' AND task_args = '[2, 3]'"
    )
    assert [row[:3] for row in rows] == [("SUCCESS", "5", "[2, 3]")]
    assert rows[0][3]  # the worker's name


@pytest.mark.timeout(120)
def test_an_order_is_shipped_once_its_transaction_commits(example: Example) -> None:
    order_id = int(example.manage("place_order", "widget", "3").strip())

    status = poll(
        lambda: example.scalar(f"SELECT status FROM orders_order WHERE id = {order_id}")
        == "shipped",
        WAIT, "the worker to ship the order",
    )  # fmt: skip

    assert status
    assert example.query(
        "SELECT status, result FROM caraway_django_taskresult"
        f" WHERE task_name = 'orders.tasks.ship' AND task_args = '[{order_id}]'"
    ) == [("SUCCESS", '"3 x widget (shipped)"')]


def _runs(example: Example, name: str) -> int:
    value = example.scalar(
        f"SELECT total_run_count FROM caraway_django_periodictask WHERE name = '{name}'"
    )
    return int(value or 0)


@pytest.mark.timeout(120)
def test_two_beats_send_each_run_once_and_pick_up_an_edit(example: Example) -> None:
    """The tally (every second, from CELERY_BEAT_SCHEDULE) writes one row per run: with two
    beats running there are exactly as many rows as recorded runs. Disabling it (a model
    save, as the admin's form does) stops it within a second or two, with no restart."""
    poll(lambda: _runs(example, "tally-orders") >= 3, WAIT, "three runs of tally-orders")

    example.python(
        "from caraway.contrib.django.models import PeriodicTask\n"
        "task = PeriodicTask.objects.get(name='tally-orders')\n"
        "task.enabled = False\ntask.save()\nprint(json.dumps(True))"
    )
    time.sleep(2.5)  # a beat polls for edits every second; the last run may be in flight
    settled = _runs(example, "tally-orders")
    time.sleep(2.5)

    assert _runs(example, "tally-orders") == settled
    tallies = poll(
        lambda: example.scalar("SELECT count(*) FROM orders_tally") == settled,
        WAIT, f"{settled} tallies (one per recorded run)",
    )  # fmt: skip
    assert tallies
    listed = example.run("-m", "caraway", "-A", "proj", "beat", "schedules", "list")
    assert (
        f"tally-orders: orders.tasks.tally_orders <freq: 1.00 second> [disabled] runs={settled}"
        in listed
    )


def _chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        missing("Chromium is not installed: apt-get install chromium (.ci/run does)")
    return found


@pytest.mark.timeout(120)
def test_the_admin_shows_a_result_and_runs_a_periodic_task_added_in_it(example: Example) -> None:
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    port = free_port()
    example.serve(port)
    task_id = example.python(
        "from orders.tasks import add\nresult = add.delay(4, 5)\nresult.get(timeout=30)\n"
        "print(json.dumps(result.id))"
    )
    interval = example.python(
        "from caraway.contrib.django.models import IntervalSchedule\n"
        "row, _ = IntervalSchedule.objects.get_or_create(every=1, period='seconds')\n"
        "print(json.dumps(str(row)))"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    admin = f"http://127.0.0.1:{port}/admin/"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(admin + "login/")
        page.fill("#id_username", ADMIN[0])
        page.fill("#id_password", ADMIN[1])
        page.click("input[type=submit]")
        page.wait_for_selector("text=Caraway tasks")
        page.screenshot(path=SCREENSHOTS / "1-index.png", full_page=True)

        page.goto(admin + f"caraway_django/taskresult/?q={task_id}")
        page.click(f"a:text-is('{task_id}')")
        shown = page.inner_text(".field-result .readonly")
        state = page.inner_text(".field-status .readonly")
        page.screenshot(path=SCREENSHOTS / "2-task-result.png", full_page=True)

        page.goto(admin + "caraway_django/periodictask/add/")
        page.fill("#id_name", "answer")
        page.fill("#id_task", "orders.tasks.add")
        page.select_option("#id_interval", label=interval)
        page.fill("#id_args", "[20, 22]")
        page.click("input[name=_save]")
        page.wait_for_selector("text=was added successfully")
        page.screenshot(path=SCREENSHOTS / "3-periodic-task-added.png", full_page=True)

        def runs_shown() -> int:
            page.reload()
            row = page.locator("tr", has=page.locator("th.field-name a:text-is('answer')"))
            count = int(row.locator("td.field-total_run_count").inner_text())
            return count

        shown_runs = poll(runs_shown, WAIT, "the admin to show runs of the new periodic task")
        page.screenshot(path=SCREENSHOTS / "4-periodic-task-ran.png", full_page=True)
        browser.close()

    assert (shown, state) == ("9", "SUCCESS")
    assert shown_runs >= 1
    answers = example.scalar(
        "SELECT count(*) FROM caraway_django_taskresult"
        " WHERE task_name = 'orders.tasks.add' AND result = '42'"
    )
    assert answers >= 1


#: The tables django-celery-results and django-celery-beat leave behind, as their migrations
#: make them (only the columns the import reads), with one result and two periodic tasks.
CELERY_TABLES = """
CREATE TABLE django_celery_results_taskresult (
    id integer PRIMARY KEY, task_id varchar(255) UNIQUE NOT NULL, status varchar(50) NOT NULL,
    content_type varchar(128) NOT NULL, content_encoding varchar(64) NOT NULL, result text,
    date_done timestamp with time zone NOT NULL, traceback text, meta text, task_args text,
    task_kwargs text, task_name varchar(255), worker varchar(100),
    date_created timestamp with time zone NOT NULL);
CREATE TABLE django_celery_beat_intervalschedule (
    id integer PRIMARY KEY, every integer NOT NULL, period varchar(24) NOT NULL);
CREATE TABLE django_celery_beat_crontabschedule (
    id integer PRIMARY KEY, minute varchar(240), hour varchar(96), day_of_week varchar(64),
    day_of_month varchar(124), month_of_year varchar(64), timezone varchar(63));
CREATE TABLE django_celery_beat_periodictask (
    id integer PRIMARY KEY, name varchar(200) UNIQUE NOT NULL, task varchar(200) NOT NULL,
    interval_id integer, crontab_id integer, solar_id integer, clocked_id integer,
    args text NOT NULL, kwargs text NOT NULL, queue varchar(200), exchange varchar(200),
    routing_key varchar(200), headers text NOT NULL, priority integer,
    expires timestamp with time zone, expire_seconds integer, one_off boolean NOT NULL,
    start_time timestamp with time zone, enabled boolean NOT NULL,
    last_run_at timestamp with time zone, total_run_count integer NOT NULL,
    date_changed timestamp with time zone, description text NOT NULL);
INSERT INTO django_celery_results_taskresult VALUES (
    1, 'old-result-1', 'SUCCESS', 'application/json', 'utf-8', '42',
    '2026-01-02 03:04:05', NULL, '{"children": []}', '[40, 2]', '{}', 'old.tasks.add',
    'celery@old', '2026-01-02 03:04:00');
INSERT INTO django_celery_beat_intervalschedule VALUES (5, 30, 'seconds');
INSERT INTO django_celery_beat_crontabschedule VALUES (9, '0', '4', '*', '*', '*',
    'Europe/Paris');
INSERT INTO django_celery_beat_periodictask VALUES (
    1, 'old-every-30s', 'old.tasks.ping', 5, NULL, NULL, NULL, '[1]', '{}', 'low', NULL,
    NULL, '{}', NULL, NULL, NULL, FALSE, NULL, FALSE, '2026-01-02 03:00:00', 7, NULL, 'old');
INSERT INTO django_celery_beat_periodictask VALUES (
    2, 'old-nightly', 'old.tasks.report', NULL, 9, NULL, NULL, '[]', '{"day": 1}', NULL, NULL,
    NULL, '{}', NULL, NULL, NULL, FALSE, NULL, FALSE, NULL, 0, NULL, '')
"""


@pytest.mark.timeout(120)
def test_rows_of_django_celery_results_and_beat_are_imported(example: Example) -> None:
    example.execute(CELERY_TABLES)

    first = example.manage("caraway_import_celery_tables")
    again = example.manage("caraway_import_celery_tables")

    assert first.strip() == "Imported 1 task results, 0 group results and 2 periodic tasks."
    assert again.strip() == "Imported 0 task results, 0 group results and 0 periodic tasks."
    assert example.query(
        "SELECT task_name, status, result, task_args, worker FROM caraway_django_taskresult"
        " WHERE task_id = 'old-result-1'"
    ) == [("old.tasks.add", "SUCCESS", "42", "[40, 2]", "celery@old")]
    tasks = example.query(
        "SELECT t.name, t.args, t.queue, t.enabled, t.total_run_count, i.every, i.period,"
        " c.hour, c.timezone FROM caraway_django_periodictask t"
        " LEFT JOIN caraway_django_intervalschedule i ON i.id = t.interval_id"
        " LEFT JOIN caraway_django_crontabschedule c ON c.id = t.crontab_id"
        " WHERE t.name LIKE 'old-%' ORDER BY t.name"
    )
    assert [tuple(row) for row in tasks] == [
        ("old-every-30s", "[1]", "low", False, 7, 30, "seconds", None, None),
        ("old-nightly", "[]", None, False, 0, None, None, "4", "Europe/Paris"),
    ]
    assert example.query("SELECT total_run_count FROM caraway_django_beatrun"
                         " WHERE name = 'old-every-30s'") == [(7,)]  # fmt: skip
