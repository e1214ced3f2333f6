"""Helpers for ``tests/cli`` (fixtures: conftest): a project folder with an app module and a
SQLite file, and ``caraway`` run in subprocesses, each bounded and killed at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from polling import poll

import caraway

T = TypeVar("T")
#: Bound for anything that normally takes well under a second (a loaded 2-core CI box).
WAIT = 15.0
SOURCE_ROOT = str(Path(caraway.__file__).resolve().parent.parent)

APP_MODULE = """
import time

from caraway import Celery

app = Celery("{name}")
app.conf.task_track_started = True


@app.task
def add(x, y):
    return x + y


@app.task
def slow(seconds):
    time.sleep(seconds)
    return "slept"
"""


def wait_until(predicate: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """``polling.poll`` with this suite's bound."""
    return poll(predicate, timeout, what)


@dataclass
class Project:
    """A folder holding ``<module>.py`` (an app with ``add`` and ``slow``) and a SQLite file."""

    root: Path
    module: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.root / 'b.sqlite3'}"

    def write(self, name: str, source: str) -> None:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))

    def add_module(self, prefix: str, source: str) -> str:
        """Write a module under a fresh name (``cli_<prefix>_<hex>``); returns the name."""
        name = f"cli_{prefix}_{uuid.uuid4().hex[:8]}"
        self.write(name, source)
        return name

    wait_until = staticmethod(wait_until)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "caraway", "-A", self.module, "-b", self.url, *args]

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``caraway -A <module> -b <url> ARGS`` in a subprocess; killed after ``WAIT`` s."""
        return subprocess.run(
            self.argv(*args), cwd=self.root, env=subprocess_env(), input=input, capture_output=True,
            text=True, timeout=WAIT, check=False,
        )  # fmt: skip

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(*args), cwd=self.root, env=subprocess_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.processes.append(proc)
        return proc

    def client(self) -> caraway.Celery:
        """An app of our own on the project's SQLite file, to send tasks and read results."""
        return caraway.Celery(f"client-{self.module}", broker=self.url, set_as_current=False)

    def kill_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=WAIT)


#: Variables that choose the app or its engines: a test sets them itself or not at all.
ISOLATED_VARIABLES = (
    "CARAWAY_APP", "CARAWAY_BROKER_URL", "CARAWAY_RESULT_BACKEND",
    "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
)  # fmt: skip


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    for name in ISOLATED_VARIABLES:
        env.pop(name, None)
    return env
