"""``worker_redirect_stdouts(_level)`` and ``worker_hijack_root_logger``: where a task's
``print()`` and a handler the application installed end up, as in Celery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# In a subprocess: the worker's logging setup replaces the process's streams and handlers.
_SCRIPT = """
import json
import logging
import sys

import caraway
from caraway.contrib.testing.worker import start_worker

folder, settings = sys.argv[1], json.loads(sys.argv[2])
logging.getLogger().addHandler(logging.FileHandler(f"{folder}/mine.log"))
url = f"sqlite:///{folder}/caraway.sqlite3"
app = caraway.Caraway("logs", broker=url, backend=url, set_as_current=False)
app.conf.update(settings)

@app.task(name="tests.chatty")
def chatty():
    print("printed by the task")
    logging.getLogger("tests.plain").warning("logged by the task")

with start_worker(app, loglevel="INFO", logfile=f"{folder}/worker.log", setup_logging=True):
    chatty.delay().get(timeout=10)
"""


def run_worker(folder: Path, **settings: object) -> tuple[str, str, str]:
    """(the worker's log, the application's own log file, the process's real stdout)."""
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder), json.dumps(settings)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return (folder / "worker.log").read_text(), (folder / "mine.log").read_text(), completed.stdout


def line_with(text: str, log: str) -> str:
    [line] = [line for line in log.splitlines() if text in line]
    return line


def test_by_default_print_goes_to_the_worker_log_at_warning_and_root_is_hijacked(
    tmp_path: Path,
) -> None:
    worker_log, mine, stdout = run_worker(tmp_path)

    assert "WARNING/" in line_with("printed by the task", worker_log)
    assert "printed by the task" not in stdout
    assert "logged by the task" in worker_log
    assert "logged by the task" not in mine  # the application's root handler was removed


def test_redirect_level_is_the_level_of_the_records(tmp_path: Path) -> None:
    worker_log, _, _ = run_worker(tmp_path, worker_redirect_stdouts_level="ERROR")

    assert "ERROR/" in line_with("printed by the task", worker_log)


def test_without_redirect_or_hijack_print_stays_on_stdout_and_handlers_stay(
    tmp_path: Path,
) -> None:
    worker_log, mine, stdout = run_worker(
        tmp_path, worker_redirect_stdouts=False, worker_hijack_root_logger=False
    )

    assert "printed by the task" in stdout
    assert "printed by the task" not in worker_log
    assert "logged by the task" in mine
    assert "logged by the task" in worker_log
