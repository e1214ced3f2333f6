"""Django's database connections in a worker: a restart survived, a fork that leaves the
parent's session alone.

The database restarts while a worker runs (prefork, then threads): the next tasks succeed.

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
from typing import Any

import psycopg
import pytest
from django_support import DjangoProject, postgres_database, requires_django
from faults.fault_servers import PrivatePostgres

pytestmark = requires_django

#: Each child (or thread) of ``-c 2`` should hold a connection of each alias when the server
#: goes away.
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


def databases(port: int, name: str) -> dict[str, Any]:
    return {
        "default": postgres_database(port, name),
        "persistent": postgres_database(port, name, CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True),
    }


@pytest.fixture(scope="module", params=["prefork", "threads"])
def project(
    request: pytest.FixtureRequest,
    postgres: PrivatePostgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DjangoProject]:
    pool = request.param
    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, dbname="postgres", user="postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {pool}")  # a database per worker: counts start at 0
    root = Path(tmp_path_factory.mktemp(f"django-restart-{pool}"))
    project = DjangoProject(root, databases(postgres.port, pool))
    try:
        project.migrate()
        project.start_worker(pool, "-c", "2")
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


def test_a_forked_child_leaves_its_parents_connection_working(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    project = DjangoProject(tmp_path, databases(postgres.port, "postgres"))
    try:
        backends = json.loads(project.run("fork_check.py"))
    finally:
        project.close()

    assert backends["child"] != backends["before"]  # the child opened its own
    assert backends["after"] == backends["before"]  # the parent's session lives on
