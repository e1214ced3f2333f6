"""The README's tour runs against a real ``caraway worker`` on the embedded SQLite default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_tour_runs_against_a_real_worker(tmp_path: Path) -> None:
    env = {**os.environ, "CARAWAY_HOME": str(tmp_path)}
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "caraway", "-A", "tour", "worker", "-l", "INFO",
         "-Q", "celery,reports", "-c", "4"],
        cwd=EXAMPLES, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = subprocess.run(
            [sys.executable, "tour.py"],
            cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stdout + client.stderr
        assert "10 of 10 checks passed" in client.stdout
        assert (tmp_path / "caraway.sqlite3").exists()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
        if worker.returncode not in (0, None):
            print((tmp_path / "worker.log").read_text())
