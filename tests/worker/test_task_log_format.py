"""The worker's task log lines name the running task (``worker_task_log_format``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# In a subprocess: the worker's logging setup replaces the process's root handlers.
_SCRIPT = """
import sys
import caraway
from caraway.contrib.testing.worker import start_worker
from caraway.utils.log import get_task_logger

folder = sys.argv[1]
url = f"sqlite:///{folder}/caraway.sqlite3"
app = caraway.Caraway("logs", broker=url, backend=url, set_as_current=False)
logger = get_task_logger("tests.logs")

@app.task(name="tests.say")
def say():
    logger.warning("hello from the task")

with start_worker(app, loglevel="INFO", logfile=f"{folder}/worker.log", setup_logging=True):
    result = say.delay()
    result.get(timeout=10)
    print(result.id, file=sys.__stdout__)  # sys.stdout goes to the worker log (redirected)
"""


def test_task_log_lines_carry_the_task_name_and_id(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    task_id = completed.stdout.split()[-1]
    log = (tmp_path / "worker.log").read_text()
    assert f"tests.say[{task_id}]: hello from the task" in log
