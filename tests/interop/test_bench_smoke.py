"""``bench/run.py --quick`` runs end to end against a real Redis and prints its table.

The benchmark itself stays out of the suite: this runs it with a tiny N, in its own Redis
database (13), only to keep the command working.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from services import require

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"
SMOKE_DB = "13"


@pytest.mark.timeout(120)
def test_the_benchmark_prints_its_table() -> None:
    host, port = require("redis")

    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--n", "100", "--roundtrips", "10",
         "--redis", f"redis://{host}:{port}", "--db", SMOKE_DB],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split("|")[0].strip() == "case"
    for label in ("enqueue: delay()", "enqueue: delay() from 16 threads",
                  "drain: 1 worker process", "round trip delay().get() p99",
                  "worker peak RSS", "group of 100: dispatch time",
                  "chord of 100: until the body ran"):  # fmt: skip
        assert any(line.startswith(label) for line in lines), done.stdout
    assert sum(line.startswith(("met", "NOT met")) for line in lines) == 11


@pytest.mark.timeout(120)
def test_the_realistic_drain_prints_each_form_with_its_ratio_to_solo() -> None:
    host, port = require("redis")

    done = subprocess.run(
        [sys.executable, str(RUN.parent / "realistic.py"), "--n", "200", "--passes", "1",
         "--libs", "caraway", "--redis", f"redis://{host}:{port}", "--db", SMOKE_DB],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "/s" in line
    }
    assert set(rows) == {"one solo process", "two solo processes", "prefork -c 2"}
    assert rows["one solo process"] == "1.00x"


@pytest.mark.timeout(120)
def test_the_prefork_profile_prints_the_cpu_of_each_process() -> None:
    host, port = require("redis")

    done = subprocess.run(
        [sys.executable, str(RUN.parent / "prefork_profile.py"), "--n", "300",
         "--redis", f"redis://{host}:{port}", "--db", SMOKE_DB],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("prefork: ")
    assert lines[0].endswith(" tasks/s")
    assert sum("(supervisor)" in line for line in lines) == 1
    assert sum("(child or fork server)" in line for line in lines) == 3  # server + 2 children
