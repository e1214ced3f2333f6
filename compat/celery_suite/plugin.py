"""The pytest plugin of the runner: the ``celery`` alias, the exclusions, and the tally.

Loaded with ``-p compat.celery_suite.plugin`` so the alias is in place before Celery's
conftest imports anything. Outcomes per file go to the JSON file named by ``$CELERY_SUITE_TALLY``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from compat.celery_suite import alias
from compat.celery_suite.budgets import budget
from compat.celery_suite.exclusions import EXCLUDED

alias.install()

#: Longest one test may take; Celery's own marks (up to 300 s) would make a failing run crawl.
TEST_TIMEOUT = float(os.environ.get("CELERY_SUITE_TEST_TIMEOUT", "60"))
EXCLUDED_PREFIX = "excluded: "

_tally: dict[str, dict[str, int]] = defaultdict(
    lambda: {"collected": 0, "passed": 0, "failed": 0, "excluded": 0, "skipped": 0}
)

_outcomes: dict[str, str] = {}


def _exclusion(nodeid: str) -> str | None:
    """The reason a test is excluded: by its id, its class, or its whole file."""
    parts = nodeid.split("::")
    for end in range(len(parts), 0, -1):
        reason = EXCLUDED.get("::".join(parts[:end]).split("[")[0])
        if reason is not None:
            return reason
    return EXCLUDED.get(nodeid)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = _exclusion(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=EXCLUDED_PREFIX + reason), append=False)
        seconds = max(TEST_TIMEOUT, budget(item.nodeid) or 0.0)  # waits longer by design
        item.add_marker(pytest.mark.timeout(seconds), append=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Counted after ``-k`` / ``--deselect``: the tests that run."""
    for item in session.items:
        _tally[item.path.name]["collected"] += 1


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _tally[Path(report.nodeid.split("::")[0]).name]["collection_errors"] = 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test passes when its setup, call and teardown (Celery's own checks) all pass."""
    if report.passed and report.when != "call":
        return
    if report.skipped:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        outcome = "excluded" if EXCLUDED_PREFIX in reason else "skipped"
    else:
        outcome = "passed" if report.passed else "failed"
    if _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = outcome


def pytest_sessionfinish() -> None:
    for nodeid, outcome in _outcomes.items():
        _tally[Path(nodeid.split("::")[0]).name][outcome] += 1
    target = os.environ.get("CELERY_SUITE_TALLY")
    if target:
        Path(target).write_text(json.dumps(dict(_tally), indent=2, sort_keys=True))
