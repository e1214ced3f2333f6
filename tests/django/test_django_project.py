"""A Django project run as Celery's Django docs run it, only ``celery`` changed to ``caraway``.

``project/djproj/celery.py`` is Celery's documented file: ``autodiscover_tasks()`` with no
arguments, no ``django.setup()``. One worker per setup, shared by the module's tests: SQLite
and PostgreSQL (a schema of its own on the shared server), each under two of the four pools
(connections are per thread in Django: each pool runs tasks on different threads).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from django_support import (
    DjangoProject,
    postgres_database,
    query,
    requires_django,
    sqlite_databases,
)
from polling import poll
from services import require

pytestmark = requires_django
psycopg = pytest.importorskip("psycopg")

#: (database, pool) of each worker.
SETUPS = [("sqlite", "prefork"), ("sqlite", "asyncio"), ("postgresql", "threads"),
          ("postgresql", "solo")]  # fmt: skip


@pytest.fixture(scope="module", params=SETUPS, ids=["-".join(setup) for setup in SETUPS])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DjangoProject]:
    database, pool = request.param
    root = tmp_path_factory.mktemp(f"django-{database}-{pool}")
    if database == "sqlite":
        yield from _serving(DjangoProject(root, sqlite_databases(root / "db.sqlite3")), pool)
        return
    _, port = require("postgresql")
    schema = f"djtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host="127.0.0.1", port=port, dbname="test", user="postgres") as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        database = postgres_database(port, "test", schema)
        yield from _serving(DjangoProject(root, {"default": database}), pool)
    finally:
        with psycopg.connect(
            host="127.0.0.1", port=port, dbname="test", user="postgres", autocommit=True
        ) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _serving(project: DjangoProject, pool: str) -> Iterator[DjangoProject]:
    try:
        project.migrate()
        project.start_worker(pool, "-c", "2")
        yield project
    finally:
        project.close()


def notes(project: DjangoProject) -> dict[int, tuple[str, str]]:
    rows = query(project.databases["default"], "SELECT id, text, seen_by FROM notes_note")
    return {pk: (text, seen_by) for pk, text, seen_by in rows}


def test_autodiscovery_finds_the_tasks_of_every_installed_app(project: DjangoProject) -> None:
    # ``notes`` is installed by name, ``tallies`` by AppConfig path.
    assert project.call("tallies.tasks.double", 21) == 42
    assert isinstance(project.call("notes.tasks.count_notes"), int)
    assert "AppRegistryNotReady" not in project.logs()


def test_tasks_that_use_models_write_the_database(project: DjangoProject) -> None:
    pk = project.call("notes.tasks.create_note", "from a task")
    assert project.call("notes.tasks.mark_seen", pk) == 1

    text, seen_by = notes(project)[pk]
    assert text == "from a task"
    pid = int(seen_by.partition("/")[0])
    worker_pid = project.workers[0][0].pid
    # Prefork runs tasks in its children, the other pools in the worker process itself.
    assert (pid != worker_pid) if project.pool == "prefork" else (pid == worker_pid)


def test_delay_on_commit_sends_when_the_transaction_commits_only(
    project: DjangoProject,
) -> None:
    report = json.loads(project.run("on_commit.py"))
    pks = report["pks"]

    assert report["is_django_task"]  # DjangoTask is the app's base task under Django
    assert report["returned"] == dict.fromkeys(pks)  # None, as Celery returns
    assert report["sent_before_commit"] == 0
    sent = [pks["committed"], pks["apply_async"], pks["outside"]]
    assert report["published"] == [{"args": [pk], "in_transaction": False} for pk in sent]
    seen = poll(
        lambda: all((row := notes(project).get(pk)) and row[1] for pk in sent) and notes(project),
        30,
        "the committed notes marked seen by the worker",
    )
    # The rolled-back note is gone, and no message about it waits in the broker.
    assert {seen[pk][0] for pk in sent} == {
        "committed",
        "apply_async_on_commit",
        "outside a transaction",
    }
    assert all(text != "rolled back" for text, _ in seen.values())
    poll(lambda: project.messages_left() == 0, 30, "an empty broker")
