"""A fast selection of Celery's own integration tests, run against caraway (a ratchet).

``compat/celery_suite`` runs Celery 5.7.0's ``t/integration`` with ``celery`` imported as
caraway. Here, in CI, a selection of about a minute runs on Redis, and each file must keep
at least the number of passing tests reached so far: a regression fails, a gain is a reason
to raise the number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from services import require

ROOT = Path(__file__).resolve().parents[2]
#: What runs: nodes of ``t/integration`` and a ``-k`` expression (Celery's tests, chosen for
#: speed and for the behaviour they pin: calling, retries, request fields, chains, chords).
SELECTION = (
    "test_tasks.py::test_tasks",
    "test_tasks.py::test_apply_tasks",
    "test_tasks.py::test_class_based_tasks",
    "test_canvas.py::test_chain",
    "test_canvas.py::test_chord",
)
KEYWORDS = "KEYWORDS_PLACEHOLDER"
#: Fewest tests that must pass per file (raise these as caraway gets better).
RATCHET = {"test_tasks.py": 0, "test_canvas.py": 0}


@pytest.mark.timeout(400)
def test_celerys_own_tests_keep_passing_against_caraway(tmp_path: Path) -> None:
    require("redis")  # the runner starts a redis-server of its own; the service proves one is here
    summary = tmp_path / "summary.json"
    command = [
        sys.executable, "-m", "compat.celery_suite", "--broker", "redis",
        "--summary", str(summary), "--test-timeout", "30",
        f"--pytest-args=-k '{KEYWORDS}'", *SELECTION,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=380)
    assert summary.is_file(), f"the runner wrote no summary:\n{done.stdout}\n{done.stderr}"
    files = json.loads(summary.read_text())["files"]
    passed = {name: files.get(name, {}).get("passed", 0) for name in RATCHET}
    below = {name: (passed[name], least) for name, least in RATCHET.items() if passed[name] < least}
    assert not below, f"fewer of Celery's tests pass (now, least): {below}\n{done.stdout[-4000:]}"
