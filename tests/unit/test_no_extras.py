"""``pip install caraway`` without extras: imports at module top must not make redis, amqp,
SQLAlchemy, psycopg, pymemcache, kombu, Django, gevent or eventlet mandatory, and the embedded
SQLite engine still runs tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter with the extras' packages blocked (``sys.modules[name] = None``
# makes ``import name`` raise ImportError), imports every module outside the extras' engine
# packages, then a SQLite app and a worker run one task.
_SCRIPT = """
import sys
for name in ("redis", "amqp", "sqlalchemy", "psycopg", "kombu", "django", "gevent", "eventlet",
             "pymemcache"):
    sys.modules[name] = None

import importlib, pkgutil
import caraway
from caraway.contrib.testing.worker import start_worker

extras = ("caraway.engines.redis", "caraway.engines.amqp", "caraway.engines.sql",
          "caraway.engines.postgresql", "caraway.engines.memcached", "caraway.engines.kombu",
          "caraway.contrib.django.")
importlib.import_module("caraway.contrib.django.fixup")  # every app loads it, Django or not
for info in pkgutil.walk_packages(caraway.__path__, "caraway."):
    if info.name != "caraway.__main__" and not info.name.startswith(extras):
        importlib.import_module(info.name)

url = "sqlite:///" + sys.argv[1]
app = caraway.Caraway("noextras", broker=url, backend=url, set_as_current=False)

@app.task
def add(x, y):
    return x + y

with start_worker(app, pool="solo", perform_ping_check=False):
    print(add.delay(2, 3).get(timeout=10))
"""


def test_sqlite_app_and_worker_run_without_any_extra(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "caraway.sqlite3")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "5"


def test_the_cli_does_not_import_the_demo_app() -> None:
    """The demo module registers shared tasks, which every app would then list."""
    script = "import sys, caraway.cli.main; print('caraway.cli.demo_app' in sys.modules)"

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"
