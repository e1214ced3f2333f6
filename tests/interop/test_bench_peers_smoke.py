"""``bench/peers.py`` and ``bench/latency.py`` run end to end against a real Redis.

Tiny sizes, one worker form per library, their own Redis databases (10 and 9, which no other
test uses): only to keep the commands working. Huey and Dramatiq come with the bench extra,
not the test extra: their rows are checked when they are installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from services import require

BENCH = Path(__file__).resolve().parents[2] / "bench"
#: Each library's one-process form (the fastest to start).
FIRST_FORMS = {
    "caraway": "caraway -P solo",
    "celery": "Celery -P solo",
    "huey": "Huey -k thread -w 1",
    "dramatiq": "Dramatiq -p 1 -t 8",
}


def run(script: str, *args: str) -> list[str]:
    host, port = require("redis")
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--passes", "1",
         "--redis", f"redis://{host}:{port}"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def row(lines: list[str], label: str) -> list[str]:
    """The cells of the table row named ``label``."""
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n" + "\n".join(lines))


def per_second(cell: str) -> float:
    """``"1,234/s"`` -> 1234.0"""
    assert cell.endswith("/s"), cell
    return float(cell.removesuffix("/s").replace(",", ""))


@pytest.mark.timeout(120)
def test_the_peer_benchmark_drains_every_installed_library() -> None:
    libs = [lib for lib in FIRST_FORMS if importlib.util.find_spec(lib) is not None]

    lines = run("peers.py", "--n", "50", "--db", "10", "--only",
                ",".join(FIRST_FORMS[lib] for lib in libs))  # fmt: skip

    assert lines[1].startswith("| configuration")
    for lib in libs:
        _, drain, _, enqueue = row(lines, FIRST_FORMS[lib])
        assert per_second(drain) > 0
        assert per_second(enqueue) > 0
    assert row(lines, "caraway -P solo")[2] == "1.00x"


@pytest.mark.timeout(120)
def test_the_latency_benchmark_measures_round_trips_under_load() -> None:
    lines = run("latency.py", "--trips", "30", "--rate", "100", "--db", "9",
                "--only", "baseline,caraway -P solo,caraway -P prefork")  # fmt: skip

    for label in ("baseline: bare redis-py BRPOP/LPUSH echo", "caraway -P solo",
                  "caraway -P prefork -c 2 (default)"):  # fmt: skip
        _, p50, p99, slowest, load, backlog = row(lines, label)
        assert 0 < float(p50.removesuffix(" ms")) <= float(p99.removesuffix(" ms"))
        assert float(p99.removesuffix(" ms")) <= float(slowest.removesuffix(" ms"))
        assert per_second(load) > 50  # the background ran at about its rate
        assert int(backlog.replace(",", "")) >= 0
