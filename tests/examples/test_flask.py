"""Flask's "Background Tasks with Celery" example (examples/flask) against a real worker.

The worker is started as Flask's docs start Celery's (``-A make_celery worker``, the default
prefork pool); the client goes through the app's own routes with Flask's test client. The
broker and results are a SQLite file, set through Flask's ``FLASK_CELERY__*`` variables.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flask")

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "flask"

#: Sends tasks through the app's routes and polls ``/tasks/result/<id>`` until each is ready.
CLIENT = """
import json, time
from task_app import create_app

client = create_app().test_client()
sent = {
    "greet": client.post("/tasks/greet", data={"name": "caraway"}).get_json()["result_id"],
    "add": client.post("/tasks/add", data={"a": 2, "b": 3}).get_json()["result_id"],
}
answers = {}
deadline = time.monotonic() + 20
for name, result_id in sent.items():
    while True:
        answer = client.get(f"/tasks/result/{result_id}").get_json()
        if answer["ready"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    answers[name] = answer
print(json.dumps(answers))
"""


def test_flask_task_runs_in_the_app_context_on_a_real_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/broker.sqlite3"
    env = {
        **os.environ,
        "FLASK_CELERY__broker_url": url,
        "FLASK_CELERY__result_backend": url,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "caraway", "-A", "make_celery", "worker", "-l", "INFO", "-c", "2"],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = subprocess.run(
            [sys.executable, "-c", CLIENT],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stdout + client.stderr
        answers = json.loads(client.stdout)
        # ``greet`` reads ``current_app``: it works only inside FlaskTask's app context.
        assert answers["greet"] == {
            "ready": True,
            "successful": True,
            "value": "Hello from the Flask app, caraway!",
        }
        assert answers["add"] == {"ready": True, "successful": True, "value": 5}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
        if worker.returncode != 0:
            print((tmp_path / "worker.log").read_text())
