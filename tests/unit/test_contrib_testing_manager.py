"""``caraway.contrib.testing.manager`` and node names: what Celery's integration tests use."""

from __future__ import annotations

import os
import socket

import pytest

from caraway import Caraway
from caraway.contrib.testing.manager import Manager, Sentinel
from caraway.utils.nodenames import anon_nodename, nodesplit


def test_anon_nodename_is_gen_pid_at_host() -> None:
    assert anon_nodename() == f"gen{os.getpid()}@{socket.gethostname()}"
    assert nodesplit(anon_nodename("h", prefix="x")) == (f"x{os.getpid()}", "h")


def test_wait_for_retries_until_the_check_holds_then_gives_its_value() -> None:
    calls: list[int] = []

    def check() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise AssertionError("not yet")
        return "done"

    manager = Manager(Caraway("m", broker="memory://"))
    assert manager.wait_for(check, (AssertionError,), interval_start=0.0, interval_step=0.0) == (
        "done"
    )
    assert len(calls) == 3


def test_wait_for_gives_up_after_max_retries_with_the_last_error() -> None:
    def never() -> None:
        raise Sentinel("still not")

    manager = Manager(Caraway("m", broker="memory://"))
    with pytest.raises(Sentinel, match="still not"):
        manager.wait_for(never, (Sentinel,), max_retries=2, interval_start=0.0)


def test_manager_refuses_unknown_options() -> None:
    with pytest.raises(TypeError, match="unexpected options"):
        Manager(Caraway("m", broker="memory://"), blok_timeout=1)


def test_wait_until_idle_purges_the_waiting_tasks_first_as_celerys_does() -> None:
    app = Caraway("m", broker="memory://")

    @app.task(name="m.nap")
    def nap() -> None: ...

    for _ in range(3):
        nap.delay()
    Manager(app).wait_until_idle(timeout=5.0)  # no worker: nothing active once purged

    assert app.control.purge() == 0
