"""Tests of Celery's integration suite that need longer than the runner's per-test cap.

Each waits on purpose (for something that must not happen, or for its own retries'
countdowns), so it takes as long under Celery as under caraway. Key: a test id as in
``exclusions.py``; value: the seconds it may take here, and the time Celery 5.7 itself took,
measured on the 2-core dev machine with Celery's own worker (2026-12-07, Redis).
"""

from __future__ import annotations

_TASKS = "t/integration/test_tasks.py"
_CANVAS = "t/integration/test_canvas.py"

BUDGETS: dict[str, tuple[float, str]] = {
    f"{_CANVAS}::test_chord::test_disabling_flag_allow_error_cb_on_chord_header": (
        240,
        "seven headers, each with two 10 s waits for a call that must not come; Celery: 148 s",
    ),
    f"{_CANVAS}::test_chord::test_enabling_flag_allow_error_cb_on_chord_header": (
        150,
        "seven headers, each with a 10 s wait for a body that must not run; Celery: 85 s",
    ),
    f"{_CANVAS}::test_chord::test_flag_allow_error_cb_on_chord_header_on_upgraded_chord": (
        120,
        "six headers, each with a 10 s wait for a body that must not run; Celery: 67 s",
    ),
    f"{_TASKS}::test_tasks::test_retry": (
        60,
        "two runs of three retries with a 5 s countdown each; Celery: 30 s",
    ),
}


def budget(nodeid: str) -> float | None:
    """The seconds ``nodeid`` may take, when it is one of the tests above (parameters ignored)."""
    entry = BUDGETS.get(nodeid.split("[")[0])
    return None if entry is None else entry[0]
