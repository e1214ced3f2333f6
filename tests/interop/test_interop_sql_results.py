"""Celery 5.7 and caraway share results in one SQL database (Celery's ``celery_taskmeta``
table): Celery 5.7 stores a result encoded by its result serializer, where older Celery and
caraway pickle it; each reads what the other wrote."""

from __future__ import annotations

from pathlib import Path

import celery
import pytest

from caraway import Caraway


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"db+sqlite:///{tmp_path / 'results.db'}"


def test_caraway_reads_what_celery_stored(url: str) -> None:
    theirs = celery.Celery("sql-interop", broker="memory://", backend=url, set_as_current=False)
    ours = Caraway("sql-interop", backend=url, set_as_current=False)
    theirs.backend.store_result("value", {"a": [1, "x"]}, "SUCCESS")
    theirs.backend.store_result("number", 42, "SUCCESS")
    theirs.backend.store_result("failure", ValueError("boom"), "FAILURE", traceback="tb")

    assert ours.AsyncResult("value").get(timeout=1) == {"a": [1, "x"]}
    assert ours.AsyncResult("number").get(timeout=1) == 42
    failed = ours.AsyncResult("failure")
    assert failed.state == "FAILURE"
    assert repr(failed.result) == "ValueError('boom')"
    assert failed.traceback == "tb"


def test_celery_reads_what_caraway_stored(url: str) -> None:
    ours = Caraway("sql-interop", backend=url, set_as_current=False)
    theirs = celery.Celery("sql-interop", broker="memory://", backend=url, set_as_current=False)
    ours.backend.store_result("value", {"a": [1, "x"]}, "SUCCESS")
    ours.backend.store_result("failure", ValueError("boom"), "FAILURE", traceback="tb")

    assert theirs.AsyncResult("value").get(timeout=1) == {"a": [1, "x"]}
    failed = theirs.AsyncResult("failure")
    assert failed.state == "FAILURE"
    assert isinstance(failed.result, ValueError)
    assert failed.result.args == ("boom",)
