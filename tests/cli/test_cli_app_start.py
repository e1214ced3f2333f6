"""Celery's ``examples/app`` pattern and a containerised setup: ``python myapp.py worker``
with ``app.start()`` at the bottom, and the broker named only by ``CELERY_BROKER_URL``."""

from __future__ import annotations

import signal
import subprocess
import sys

from cli_support import WAIT, Project, subprocess_env

MYAPP = """
from caraway import Celery

app = Celery("myapp")  # no broker in the code: the environment names it


@app.task
def add(x, y):
    return x + y


if __name__ == "__main__":
    app.start()
"""


def test_python_myapp_worker_runs_tasks_from_a_producer_configured_by_environment(
    project: Project,
) -> None:
    project.write("myapp", MYAPP)
    env = {**subprocess_env(), "CELERY_BROKER_URL": project.url, "CARAWAY_HOME": str(project.root)}
    worker = subprocess.Popen(
        [sys.executable, "myapp.py", "worker", "-P", "solo", "-l", "INFO"], cwd=project.root,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    project.processes.append(worker)
    producer = subprocess.run(
        [sys.executable, "-c", "from myapp import add; print(add.delay(2, 3).get(timeout=15))"],
        cwd=project.root, env=env, capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip

    assert producer.stdout.strip() == "5", producer.stderr
    # Both sides used the broker of the environment, not the embedded default file.
    assert not (project.root / "caraway.sqlite3").exists()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=WAIT)
    assert worker.returncode == 0, err
    assert "myapp.add" in err  # the worker's INFO log names the task it ran
