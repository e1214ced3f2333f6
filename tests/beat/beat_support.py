"""Helpers for ``tests/beat``: a project folder with an app module, beat and worker processes
started from it (bounded, killed at teardown), and polling with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from polling import poll

import caraway

T = TypeVar("T")
#: Bound for waits that normally take a second or two (a loaded 2-core CI box).
WAIT = 15.0
SOURCE_ROOT = str(Path(caraway.__file__).resolve().parent.parent)


def wait_until(predicate: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """``polling.poll`` with this suite's bound."""
    return poll(predicate, timeout, what)


class BeatProject:
    """``beat_app.py`` in ``root``, and the caraway processes run from there."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        (root / "beat_app.py").write_text(textwrap.dedent(source))
        self.processes: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        for name in ("CARAWAY_APP", "CARAWAY_BROKER_URL", "CARAWAY_RESULT_BACKEND"):
            env.pop(name, None)
        log = self.root / f"proc-{len(self.processes)}.log"
        self.logs.append(log)
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "caraway", "-A", "beat_app", *args],
                cwd=self.root, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        self.processes.append(proc)
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "caraway", "-A", "beat_app", *args], cwd=self.root, env=env,
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip

    def log(self, index: int) -> str:
        return self.logs[index].read_text()

    @staticmethod
    def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
        proc.send_signal(sig)
        return proc.wait(WAIT)

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(WAIT)
