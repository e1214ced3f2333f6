"""Stamps in a real worker: ``self.request.stamps``, kept on retry and replace, and
``revoke_by_stamped_headers`` (on the embedded engines, workers in threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from worker_support import WAIT, make_app, wait_until

from caraway import Celery, Task, states
from caraway.canvas import Signature, StampingVisitor
from caraway.cli.base import CLIState
from caraway.cli.main import cli
from caraway.exceptions import TaskRevokedError
from caraway.worker import state as worker_state


class Tenant(StampingVisitor):
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        return {"tenant": self.tenant}


@pytest.fixture(params=["sqlite", "memory"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    made = make_app(request.param, "stamps", tmp_path / "b.sqlite3")
    yield made
    made.close()
    worker_state.revoked_stamps.clear()  # one map per process, as in Celery


def _seen_stamps(request: Any) -> dict[str, Any]:
    return {"names": list(request.stamped_headers), "stamps": dict(request.stamps)}


def test_a_task_sees_its_stamps_also_after_retry_and_replace(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    seen: list[tuple[str, int, dict[str, Any]]] = []

    class StampOnReplace(Task[Any, Any]):
        def on_replace(self, sig: Signature) -> Any:
            sig.stamp(replaced=True)
            return super().on_replace(sig)

    @app.task(bind=True, name="stamps.flaky", max_retries=1)
    def flaky(self: Any) -> str:
        seen.append(("flaky", self.request.retries, _seen_stamps(self.request)))
        if not self.request.retries:
            raise self.retry(countdown=0)
        return "ok"

    @app.task(bind=True, base=StampOnReplace, name="stamps.replaced")
    def replaced(self: Any) -> Any:
        return self.replace(flaky.si())

    start_worker(app)
    sig = replaced.si()
    sig.stamp(Tenant("acme"))

    assert sig.apply_async().get(timeout=WAIT) == "ok"

    both = {"names": ["tenant", "replaced"], "stamps": {"tenant": "acme", "replaced": True}}
    assert [(name, retries, {"names": sorted(s["names"]), "stamps": s["stamps"]})
            for name, retries, s in seen] == [
        ("flaky", 0, {"names": sorted(both["names"]), "stamps": both["stamps"]}),
        ("flaky", 1, {"names": sorted(both["names"]), "stamps": both["stamps"]}),
    ]  # fmt: skip


def test_revoke_by_stamped_headers_refuses_matching_tasks_also_ones_received(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    runs: list[str] = []

    @app.task(name="stamps.work")
    def work(name: str) -> str:
        runs.append(name)
        return name

    worker = start_worker(app, hostname="w1@stamps")
    # Received before the revoke: held by the worker for its countdown.
    held = work.si("held").stamp(Tenant("acme")).apply_async(countdown=3.0)
    wait_until(
        lambda: app.control.inspect(timeout=1, limit=1).scheduled(), what="the task to be held"
    )

    replies = app.control.revoke_by_stamped_headers(
        {"tenant": ["acme"]}, reply=True, timeout=WAIT, limit=1
    )

    assert replies == [{"w1@stamps": {"ok": "headers {'tenant': ['acme']} flagged as revoked,"
                                            " but not terminated"}}]  # fmt: skip
    assert worker.state.revoked_stamps == {"tenant": ["acme"]}
    after = work.si("after").stamp(Tenant("acme")).apply_async()
    other = work.si("other").stamp(Tenant("zeta")).apply_async()
    plain = work.delay("plain")
    assert other.get(timeout=WAIT) == "other"
    assert plain.get(timeout=WAIT) == "plain"
    for result in (held, after):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=WAIT)
        assert result.state == states.REVOKED
    assert sorted(runs) == ["other", "plain"]


def test_revoke_by_stamped_headers_with_terminate_stops_a_running_task(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    release = threading.Event()

    @app.task(name="stamps.wait")
    def wait() -> str:
        while not release.is_set():  # Python steps: the terminate exception lands between
            release.wait(0.01)
        return "done"

    start_worker(app, hostname="w1@stamps", concurrency=1)
    try:
        result = wait.si().stamp(batch=[7, 8]).apply_async()
        inspect = app.control.inspect(timeout=1, limit=1)
        wait_until(lambda: (inspect.active() or {}).get("w1@stamps"), what="the task to run")

        replies = app.control.revoke_by_stamped_headers(
            {"batch": 8}, terminate=True, reply=True, timeout=WAIT, limit=1
        )

        assert replies == [{"w1@stamps": {"ok": "headers {'batch': [8]} revoked"}}]
        wait_until(lambda: result.state == states.REVOKED, what="the REVOKED state")
    finally:
        release.set()


def test_the_command_line_revokes_by_stamp(app: Celery, start_worker: Callable[..., Any]) -> None:
    worker = start_worker(app, hostname="cli@stamps")

    done = CliRunner().invoke(
        cli, ["control", "revoke_by_stamped_headers", "tenant=acme", "batch=7", "-t", "2"],
        obj=CLIState(app),
    )  # fmt: skip

    assert done.exit_code == 0, done.output
    assert "flagged as revoked, but not terminated" in done.output
    assert worker.state.revoked_stamps == {"tenant": ["acme"], "batch": ["7"]}
