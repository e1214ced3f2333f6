"""``--statedb``: revoked ids survive a restart, even on a broker that does not keep them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, memory_app, wait_until

from caraway import states


def counting_app(main: str) -> tuple[Any, Any, list[int]]:
    app = memory_app(main)  # a fresh memory broker: it knows nothing of earlier revocations
    runs: list[int] = []

    @app.task(name="statedb.add")
    def add(x: int, y: int) -> int:
        runs.append(x + y)
        return x + y

    return app, add, runs


def test_revoked_ids_are_kept_across_a_restart(tmp_path: Path) -> None:
    statedb = tmp_path / "worker.state"
    first_app, _, _ = counting_app("statedb-1")
    first = ThreadedWorker(first_app, pool="solo", statedb=str(statedb)).start()
    first_app.control.revoke("doomed-id")
    wait_until(lambda: first.worker.state.is_revoked("doomed-id"), what="the revocation")
    first.stop()
    assert json.loads(statedb.read_text())["revoked"] == ["doomed-id"]

    app, add, runs = counting_app("statedb-2")
    second = ThreadedWorker(app, pool="solo", statedb=str(statedb)).start()
    try:
        doomed = add.apply_async((1, 1), task_id="doomed-id")
        fine = add.delay(2, 2)

        assert fine.get(timeout=WAIT) == 4
        wait_until(lambda: doomed.state == states.REVOKED, what="REVOKED")
        assert runs == [4]
    finally:
        second.stop()


def test_an_unreadable_statedb_stops_the_boot_with_what_to_do(tmp_path: Path) -> None:
    statedb = tmp_path / "broken.state"
    statedb.write_text("not json")
    app, _, _ = counting_app("statedb-broken")

    with pytest.raises(AssertionError, match="Delete it or choose another --statedb"):
        ThreadedWorker(app, pool="solo", statedb=str(statedb)).start()
