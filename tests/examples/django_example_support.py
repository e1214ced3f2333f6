"""examples/django run the way its README runs it: ``manage.py`` commands, a worker, beats and
``runserver`` as subprocesses in the project folder, on their own database.

Django is never set up in the pytest process (its settings would hold for every other test):
the tests read the database straight through its driver.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from polling import poll

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "django"
#: Bound for a process to start, a task to finish, a command to run (a loaded 2-core machine).
WAIT = 30.0
ADMIN = ("admin", "caraway-example-password")


class Example:
    """The example project with its files in ``root`` and, when ``postgres_db`` is given,
    its tables in that PostgreSQL database (else a SQLite file in ``root``)."""

    def __init__(self, root: Path, postgres_db: str | None) -> None:
        self.root = root
        self.postgres_db = postgres_db
        self.env = {
            **os.environ,
            "EXAMPLE_DIR": str(root),
            "TALLY_EVERY": "1",
            "DJANGO_SUPERUSER_PASSWORD": ADMIN[1],
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if postgres_db:
            self.env["POSTGRES_DB"] = postgres_db
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def manage(self, *args: str) -> str:
        """A ``manage.py`` command's output."""
        return self._run([sys.executable, "manage.py", *args])

    def run(self, *args: str) -> str:
        """``python <args>`` in the project folder (``-m caraway ...``); its output."""
        return self._run([sys.executable, *args])

    def python(self, code: str) -> Any:
        """Run ``code`` with Django set up; the JSON it prints last (``print(json.dumps(x))``)."""
        script = "import json, django\ndjango.setup()\n" + code
        env_code = [sys.executable, "-c", script]
        output = self._run(env_code, DJANGO_SETTINGS_MODULE="proj.settings")
        return json.loads(output.strip().splitlines()[-1])

    def _run(self, command: list[str], **env: str) -> str:
        done = subprocess.run(
            command, cwd=PROJECT, env={**self.env, **env}, capture_output=True, text=True,
            timeout=WAIT * 2,
        )  # fmt: skip
        assert done.returncode == 0, f"{command[1:3]}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """A long-running process of the project (``-m caraway ...`` or ``manage.py ...``)."""
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=PROJECT, env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append((name, proc, log))
        return proc

    def serve(self, port: int) -> None:
        """``manage.py runserver`` on ``port``, returning once it accepts connections."""
        proc = self.start(
            "runserver", "manage.py", "runserver", "--noreload", "--insecure", f"127.0.0.1:{port}"
        )

        def accepting() -> bool:
            assert proc.poll() is None, self.logs()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        poll(accepting, WAIT, "runserver to accept connections")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, read straight from the project's database."""
        if not self.postgres_db:
            with closing(sqlite3.connect(self.root / "db.sqlite3", timeout=10)) as conn:
                return conn.execute(sql).fetchall()
        import psycopg  # Lazy: SQLite needs no driver.

        with psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname=self.postgres_db,
            autocommit=True,
        ) as conn:  # fmt: skip
            return conn.execute(sql).fetchall()

    def execute(self, script: str) -> None:
        """Run SQL statements (separated by ``;``) and commit them."""
        if not self.postgres_db:
            with closing(sqlite3.connect(self.root / "db.sqlite3", timeout=10)) as conn:
                conn.executescript(script)
                conn.commit()
            return
        import psycopg  # Lazy: SQLite needs no driver.

        with psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname=self.postgres_db,
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(script.encode())  # bytes: several statements in one call

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def stop(self, name: str) -> None:
        """SIGTERM (a warm shutdown) to every process called ``name``, and wait for it."""
        for each, proc, _ in self.processes:
            if each == name and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(WAIT)

    def logs(self) -> str:
        return "\n".join(
            f"----- {name} -----\n{log.read_text(errors='replace')[-4000:]}"
            for name, _, log in self.processes
        )

    def close(self) -> None:
        for name in dict.fromkeys(name for name, _, _ in self.processes):
            self.stop(name)
        print(self.logs())
