"""Celery's own examples (``app``, ``next-steps``, ``periodic-tasks``, ``security``) run as their
READMEs say, taken from the Celery 5.7.0 sdist with only ``from celery import`` changed.

Their code names brokers on localhost (RabbitMQ's default vhost, Redis database 0); the tests
point them at a vhost or database of their own with ``CELERY_BROKER_URL`` /
``CELERY_RESULT_BACKEND``, as a user moves an app to another broker without touching its code
(Celery reads the same variables, and lets them win over the code). Nothing else is changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery_sdist import copy_example
from polling import poll
from services import rabbitmq_vhost, require

pytestmark = pytest.mark.timeout(120)
WAIT = 30.0
#: Redis database of the security example's broker and results; emptied before and after.
REDIS_DB = 13


class Example:
    """One example folder and the processes started in it, stopped at the end."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env = {**os.environ, "PYTHONPATH": str(root), **env}
        for name in ("CARAWAY_APP", "CARAWAY_BROKER_URL", "CARAWAY_RESULT_BACKEND"):
            self.env.pop(name, None)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *argv: str) -> Path:
        """``argv`` in the background, its output in a log file; returns the log's path."""
        log = self.root / f"process-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.procs.append((proc, log))
        return log

    def wait_for(self, log: Path, text: str, timeout: float = WAIT) -> None:
        def seen() -> bool:
            for proc, path in self.procs:
                if path == log and proc.poll() is not None:
                    raise AssertionError(f"exited early:\n{log.read_text(errors='replace')}")
            return text in log.read_text(errors="replace")

        poll(seen, timeout, f"{text!r} in {log.name}")

    def python(self, code: str) -> str:
        """Run ``code`` as the README's second window does; its stdout."""
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=self.root, env=self.env, capture_output=True,
            text=True, timeout=WAIT + 15,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextmanager
def example(name: str, tmp_path: Path, changed: int, **env: str) -> Iterator[Example]:
    root = tmp_path / name
    assert copy_example(name, root) == changed
    made = Example(root, **env)
    try:
        yield made
    finally:
        made.stop()


def test_app_runs_with_python_myapp_py_worker(tmp_path: Path) -> None:
    # Its README: `python myapp.py worker -l INFO`, then `add.delay(16, 16).get()`; add sleeps
    # 10 s. Its code has no result backend ("add result backend here if needed"): rpc://.
    with rabbitmq_vhost("caraway-example-app") as broker, example(
        "app", tmp_path, 1, CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND="rpc://"
    ) as app:  # fmt: skip
        app.wait_for(app.start(sys.executable, "myapp.py", "worker", "-l", "INFO"), " ready.")
        assert app.python("from myapp import add; print(add.delay(16, 16).get(timeout=30))") == "32"


def test_next_steps_runs_with_caraway_a_proj_worker(tmp_path: Path) -> None:
    caraway = str(Path(sys.executable).parent / "caraway")
    with rabbitmq_vhost("caraway-example-next") as broker, example(
        "next-steps", tmp_path, 1, CELERY_BROKER_URL=broker
    ) as steps:  # fmt: skip
        steps.wait_for(steps.start(caraway, "-A", "proj", "worker", "-l", "INFO"), " ready.")
        code = (
            "from caraway import chain, group\n"
            "from proj.tasks import add, mul, xsum\n"
            "print(add.delay(2, 2).get(timeout=20),"
            " (add.s(4, 4) | mul.s(8)).delay().get(timeout=20),"
            " group(xsum.s([i, i]) for i in range(3)).delay().get(timeout=20))"
        )
        assert steps.python(code) == "4 64 [0, 2, 4]"


def test_periodic_tasks_run_with_python_myapp_py_beat(tmp_path: Path) -> None:
    with rabbitmq_vhost("caraway-example-periodic") as broker, example(
        "periodic-tasks", tmp_path, 1, CELERY_BROKER_URL=broker
    ) as periodic:  # fmt: skip
        worker = periodic.start(sys.executable, "myapp.py", "worker", "-l", "INFO")
        periodic.wait_for(worker, " ready.")
        beat = periodic.start(sys.executable, "myapp.py", "beat", "-l", "INFO")
        periodic.wait_for(beat, "add every 10")
        periodic.wait_for(worker, "hello")  # say('hello'): the first run is due at once


def test_security_signs_messages_with_python_mysecureapp_py_worker(tmp_path: Path) -> None:
    import redis
    from signing_support import write_identity

    host, port = require("redis")
    url = f"redis://{host}:{port}/{REDIS_DB}"
    client = redis.Redis(host=host, port=port, db=REDIS_DB)
    client.flushdb()
    try:
        with example(
            "security", tmp_path, 1, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url
        ) as secure:  # fmt: skip
            # Its README makes ssl/worker.key and ssl/worker.pem with openssl; the same here.
            key, cert = write_identity(secure.root / "ssl", "worker", serial=99)
            assert (key.name, cert.name) == ("worker.key", "worker.pem")
            task_id = secure.python("from mysecureapp import boom; print(boom.delay().id)")
            [queued] = client.lrange("celery", 0, -1)  # sent before any worker runs
            assert json.loads(queued)["content-type"] == "application/data"  # signed
            log = secure.start(sys.executable, "mysecureapp.py", "worker", "-l", "INFO")
            secure.wait_for(log, " ready.")
            signed = secure.python(
                f"from mysecureapp import app\nprint(app.AsyncResult({task_id!r}).get(timeout=20))"
            )
            assert signed == "I am a signed message"
    finally:
        client.flushdb()
        client.close()
