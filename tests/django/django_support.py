"""The Django test project (``project/``) run the way a Django user runs Celery's worker.

Nothing here sets Django up in the pytest process: ``DJANGO_SETTINGS_MODULE`` would switch the
Django fixup on for every app the other tests create. Django runs only in subprocesses (the
worker, ``manage.py migrate``, ``on_commit.py``); the test reads the database directly.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from caraway import Celery

#: Found, not imported: Django imported into the pytest process would change other tests.
requires_django = pytest.mark.skipif(
    find_spec("django") is None, reason="Django is not installed (the test extra has it)"
)

PROJECT = Path(__file__).resolve().parent / "project"

#: Bound for a worker to boot, a task to finish, a script to run (a loaded 2-core machine).
WAIT = 30.0


def sqlite_databases(path: Path) -> dict[str, Any]:
    return {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}}


def postgres_database(
    port: int, name: str, schema: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One ``DATABASES`` entry; ``schema`` isolates the tables on a shared server."""
    options = {"options": f"-c search_path={schema}"} if schema else {}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NAME": name,
        "USER": "postgres",
        "OPTIONS": options,
        **extra,
    }


class DjangoProject:
    """``project/`` on the given databases, with its broker (a SQLite file) in ``root``.

    ``cwd``, ``app``, ``broker`` and ``backend`` name another project and where it sends tasks.
    """

    def __init__(
        self,
        root: Path,
        databases: dict[str, Any],
        cwd: Path = PROJECT,
        app: str = "djproj",
        broker: str | None = None,
        backend: str | None = None,
    ) -> None:
        self.root = root
        self.cwd = cwd
        self.app = app
        self.databases = databases
        self.broker = broker or f"sqlite:///{root}/broker.sqlite3"
        self.env = {
            **os.environ,
            "DJPROJ_DATABASES": json.dumps(databases),
            "DJPROJ_BROKER": self.broker,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.client = Celery(
            f"client-{root.name}", broker=self.broker, backend=backend or self.broker
        )
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.pool = ""

    def run(self, *args: str) -> str:
        """Run a Python script or ``manage.py`` command of the project; its stdout."""
        done = subprocess.run(
            [sys.executable, *args], cwd=self.cwd, env=self.env, capture_output=True,
            text=True, timeout=WAIT * 2,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def migrate(self) -> None:
        self.run("manage.py", "migrate", "--run-syncdb", "-v0")

    def start_worker(self, pool: str, *options: str) -> subprocess.Popen[bytes]:
        """``caraway -A <app> worker -P <pool> <options>``, as Celery's docs start a Django
        worker; returns once it answers a ping (fails at once if it exits instead)."""
        self.pool = pool
        log = self.root / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "caraway", "-A", self.app, "worker", "-l", "INFO",
                 "-P", pool, *options],
                cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.workers.append((proc, log))
        ping = self.client.send_task("celery.ping")
        deadline = time.monotonic() + WAIT
        while not ping.ready():
            assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{self.logs()}"
            assert time.monotonic() < deadline, f"no answer to a ping:\n{self.logs()}"
            time.sleep(0.05)
        assert ping.get(timeout=1) == "pong"
        return proc

    def call(self, name: str, *args: Any) -> Any:
        """Send task ``name`` to the worker and wait for its value."""
        return self.client.send_task(name, args).get(timeout=WAIT)

    def messages_left(self) -> int:
        """Message rows still in the broker file (queued or leased)."""
        with closing(sqlite3.connect(self.root / "broker.sqlite3")) as conn:
            return int(conn.execute("SELECT count(*) FROM caraway_messages").fetchone()[0])

    def logs(self) -> str:
        return "\n".join(log.read_text(errors="replace") for _, log in self.workers)

    def close(self) -> None:
        """Stop every worker with SIGTERM (a warm shutdown); print their logs for a failure."""
        for proc, log in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(WAIT)
            print(f"----- {log.name} (exit {proc.returncode}) -----")
            print(log.read_text(errors="replace"))
        self.client.close()


def query(database: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read straight from a ``DATABASES`` entry's database."""
    if database["ENGINE"].endswith("sqlite3"):
        with closing(sqlite3.connect(database["NAME"])) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(
        host=database["HOST"], port=int(database["PORT"]), dbname=database["NAME"],
        user=database["USER"], options=database["OPTIONS"].get("options", ""), autocommit=True,
    ) as conn:  # fmt: skip
        return conn.execute(sql).fetchall()
