"""Django's database connections in a worker: a restart survived, a fork that leaves the
parent's session alone.

The database restarts while a prefork worker runs: the next tasks succeed.

The PostgreSQL cluster is the test's own (``initdb`` on a free port), restarted with
``pg_ctl stop -m fast``, which ends every session. Two aliases point at it: ``default`` with
Django's defaults (``CONN_MAX_AGE`` 0: a connection per task) and ``persistent``
(``CONN_MAX_AGE`` None with ``CONN_HEALTH_CHECKS``). Both fail without the fixup's work: a
connection that nothing closes after its task outlives the server, and a persistent one is
health-checked only after ``close_old_connections`` has run for the next task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django_support import DjangoProject, postgres_database
from faults.fault_servers import PrivatePostgres

pytest.importorskip("django")
pytest.importorskip("psycopg")

#: Each child of ``-c 2`` should hold a connection of each alias when the server goes away.
WARM_UP = 8


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def project(
    postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DjangoProject]:
    databases = {
        "default": postgres_database(postgres.port, "postgres"),
        "persistent": postgres_database(
            postgres.port, "postgres", CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True
        ),
    }
    project = DjangoProject(Path(tmp_path_factory.mktemp("django-restart")), databases)
    try:
        project.migrate()
        project.start_worker("prefork", "-c", "2")
        yield project
    finally:
        project.close()


def counts(project: DjangoProject, times: int) -> list[int]:
    """``count_notes`` on both aliases, ``times`` each, all sent before any is awaited."""
    results = [
        project.client.send_task("notes.tasks.count_notes", (alias,))
        for _ in range(times)
        for alias in ("default", "persistent")
    ]
    return [result.get(timeout=30) for result in results]


def test_tasks_after_a_database_restart_succeed(
    project: DjangoProject, postgres: PrivatePostgres
) -> None:
    project.call("notes.tasks.create_note", "before the restart")
    assert counts(project, WARM_UP) == [1] * 2 * WARM_UP

    postgres.stop("fast")
    postgres.start()

    assert project.call("notes.tasks.create_note", "after the restart") == 2
    assert counts(project, WARM_UP) == [2] * 2 * WARM_UP
    assert "Traceback" not in project.logs()


def test_a_forked_child_leaves_its_parents_connection_working(project: DjangoProject) -> None:
    backends = json.loads(project.run("fork_check.py"))

    assert backends["child"] != backends["before"]  # the child opened its own
    assert backends["after"] == backends["before"]  # the parent's session lives on
