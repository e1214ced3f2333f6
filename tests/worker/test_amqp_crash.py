"""A worker process on RabbitMQ killed with SIGKILL: its acks_late task comes back, redelivered."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from amqp_support import rabbit_vhost
from worker_support import WAIT, wait_until

TASKS_SOURCE = """
import os
import time
from pathlib import Path

from caraway import Celery

HERE = Path(__file__).resolve().parent
app = Celery("amqpcrash", broker=os.environ["AMQPCRASH_URL"], backend="rpc://")


@app.task(name="amqpcrash.late", bind=True, acks_late=True)
def late(self, key):
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with open(HERE / key, "a") as f:
        f.write(f"{os.getpid()} {redelivered}\\n")
    runs = len((HERE / key).read_text().splitlines())
    if runs == 1:
        time.sleep(60)  # killed here
    return runs
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, object, list[subprocess.Popen[bytes]]]]:
    with rabbit_vhost("crash") as url:
        module = tmp_path / "amqpcrash_tasks.py"
        module.write_text(TASKS_SOURCE)
        os.environ["AMQPCRASH_URL"] = url
        spec = importlib.util.spec_from_file_location(f"amqpcrash_{uuid.uuid4().hex}", module)
        assert spec is not None
        assert spec.loader is not None
        tasks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tasks)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            yield tmp_path, tasks, procs
        finally:
            os.environ.pop("AMQPCRASH_URL", None)
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(WAIT)
            tasks.app.close()


def _spawn(root: Path, url: str, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    code = (
        "import amqpcrash_tasks as m; "
        "m.app.Worker(pool='threads', concurrency=1, install_signal_handlers=True).start()"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "AMQPCRASH_URL": url}
    log = open(root / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=log, stderr=log)
    log.close()
    procs.append(proc)
    return proc


def test_a_killed_workers_late_task_is_redelivered_and_completes(
    project: tuple[Path, object, list[subprocess.Popen[bytes]]],
) -> None:
    root, tasks, procs = project
    url = os.environ["AMQPCRASH_URL"]
    key = "late-marks"
    result = tasks.late.delay(key)  # type: ignore[attr-defined]
    first = _spawn(root, url, procs)

    def runs() -> list[list[str]]:
        path = root / key
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    wait_until(lambda: len(runs()) == 1, what="the first run")
    first.send_signal(signal.SIGKILL)
    first.wait(WAIT)
    _spawn(root, url, procs)

    assert result.get(timeout=WAIT) == 2
    (_, first_flag), (second_pid, second_flag) = runs()
    assert (first_flag, second_flag) == ("False", "True")
    assert int(second_pid) != first.pid
