"""``bench/brokers.py`` runs end to end on real Redis and PostgreSQL and prints its table.

With a tiny N, its own Redis database (12, which no other test uses) and its own schema:
only to keep the command working.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from services import require

RUN = Path(__file__).resolve().parents[2] / "bench" / "brokers.py"


@pytest.mark.timeout(120)
def test_the_broker_benchmark_prints_its_table() -> None:
    host, port = require("redis")
    pg_host, pg_port = require("postgresql")

    done = subprocess.run(
        [sys.executable, str(RUN), "--n", "100", "--roundtrips", "10",
         "--redis", f"redis://{host}:{port}", "--db", "12",
         "--postgresql", f"postgresql://postgres@{pg_host}:{pg_port}/test"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "| case | redis | postgresql |"
    for label in ("enqueue: delay()", "drain: 1 solo worker", "round trip delay().get() p99"):
        assert any(line.startswith(f"| {label} |") for line in lines), done.stdout
