"""The dashboard's history file: events folded into tasks, in any order, bounded, kept."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from caraway.dashboard.config import DashboardConfig, normalise_prefix, parse_basic_auth
from caraway.dashboard.service import masked
from caraway.dashboard.store import Limits, Store, TaskFilter
from caraway.exceptions import ImproperlyConfigured

_clock = itertools.count(1_000_000)


def event(kind: str, task_id: str, stamp: float | None = None, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": task_id, "hostname": "w1@host",
            "timestamp": float(next(_clock)) if stamp is None else stamp, **fields}  # fmt: skip


#: The stories below use small timestamps: keep them all, whatever their age.
KEEP_ALL = Limits(max_age=float("inf"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "dash.sqlite3", KEEP_ALL)


def test_a_task_is_one_row_with_every_event_on_its_timeline(store: Store) -> None:
    store.add_task_events([
        event("task-received", "t1", 10.0, name="proj.add", args="(2, 3)", kwargs="{}"),
        event("task-started", "t1", 11.0),
    ])  # fmt: skip
    store.add_task_events([event("task-succeeded", "t1", 12.5, result="5", runtime=1.5)])

    task = store.task("t1")
    assert task is not None
    assert (task["state"], task["name"], task["args"], task["result"]) == (
        "SUCCESS", "proj.add", "(2, 3)", "5")  # fmt: skip
    assert (task["received"], task["started"], task["succeeded"]) == (10.0, 11.0, 12.5)
    assert task["hostname"] == "w1@host"
    assert [e["type"] for e in store.timeline("t1")] == [
        "task-received", "task-started", "task-succeeded"]  # fmt: skip


def test_a_finished_task_stays_finished_when_an_older_event_comes_late(store: Store) -> None:
    store.add_task_events([event("task-succeeded", "t1", 20.0, result="1")])
    store.add_task_events([event("task-started", "t1", 19.0)])
    failed = event("task-failed", "t2", 31.0, exception="ValueError()")
    store.add_task_events([event("task-received", "t2", 30.0), failed,
                           event("task-started", "t2", 30.5)])  # fmt: skip

    assert store.task("t1")["state"] == "SUCCESS"  # type: ignore[index]
    assert store.task("t2")["state"] == "FAILURE"  # type: ignore[index]
    assert store.task("t2")["exception"] == "ValueError()"  # type: ignore[index]


def test_filters_and_search(store: Store) -> None:
    store.add_task_events([
        event("task-received", "a", name="proj.add", args="(1, 'needle')"),
        event("task-received", "b", name="proj.mul", args="(2,)", kwargs="{'k': 'needle'}"),
        event("task-received", "c", name="proj.add", args="(3,)", parent_id="a"),
        event("task-failed", "c"),
    ])  # fmt: skip

    def ids(**wanted: Any) -> list[str]:
        return [t["uuid"] for t in store.tasks(TaskFilter(**wanted))]

    assert ids() == ["c", "b", "a"]  # newest first
    assert ids(name="proj.add") == ["c", "a"]
    assert ids(state="FAILURE") == ["c"]
    assert ids(search="needle") == ["b", "a"]
    assert ids(search="b") == ["b"]  # a task id finds that task
    assert ids(worker="nobody") == []
    assert ids(limit=1) == ["c"]
    assert store.children("a") == ["c"]
    assert store.task_names() == ["proj.add", "proj.mul"]


def test_history_is_bounded_by_count_and_age(tmp_path: Path) -> None:
    now = time.time()
    store = Store(tmp_path / "dash.sqlite3", Limits(max_tasks=3, max_age=100.0))
    ages = (130, 120, 110, 90, 80, 70)
    # The first batch prunes at once: the three older than 100 s go.
    store.add_task_events([event("task-received", f"t{i}", now - age)
                           for i, age in enumerate(ages)])  # fmt: skip
    assert [t["uuid"] for t in store.tasks()] == ["t5", "t4", "t3"]

    store.add_task_events([event("task-received", f"n{i}", now - 5 + i) for i in range(2)])
    assert store.prune() == 2  # the oldest two past the count (3)
    assert [t["uuid"] for t in store.tasks()] == ["n1", "n0", "t5"]
    assert store.count() == 3


def test_the_history_survives_a_restart(tmp_path: Path) -> None:
    first = Store(tmp_path / "dash.sqlite3", KEEP_ALL)
    first.add_task_events([event("task-received", "kept", name="proj.add")])
    first.save_worker("w1@host", {"processed": 3}, 123.0, None)
    first.close()

    assert (tmp_path / "dash.sqlite3").stat().st_mode & 0o777 == 0o600
    again = Store(tmp_path / "dash.sqlite3", KEEP_ALL)
    assert again.task("kept") is not None
    assert again.workers()[0]["info"] == {"processed": 3}


def test_config_refuses_the_network_without_authentication(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="--basic-auth"):
        DashboardConfig(address="0.0.0.0", store_path=tmp_path / "d").check()
    DashboardConfig(address="0.0.0.0", auth_token="t", store_path=tmp_path / "d").check()
    DashboardConfig(address="::1", store_path=tmp_path / "d").check()
    assert parse_basic_auth("ann:pw1,bob:p:w") == (("ann", "pw1"), ("bob", "p:w"))
    with pytest.raises(ImproperlyConfigured, match="user:password"):
        parse_basic_auth("ann")
    assert normalise_prefix("/dash/") == "/dash"
    assert normalise_prefix("") == ""


def test_secrets_are_masked_at_any_depth() -> None:
    conf = {"broker_url": "redis://:s3cret@h:6379/0", "nested": {"db_password": "pw"},
            "routing_key": "celery", "hosts": ["amqp://u:pw2@h//"]}  # fmt: skip
    shown = repr(masked(conf))
    for secret in ("s3cret", "'pw'", "pw2"):
        assert secret not in shown
    assert masked(conf)["routing_key"] == "celery"


def test_flowers_sort_by(store: Store) -> None:
    store.add_task_events([
        event("task-received", "t1", 3.0, name="b"),
        event("task-received", "t2", 1.0, name="c"),
        event("task-received", "t3", 2.0, name="a"),
    ])  # fmt: skip

    def ids(sort_by: str) -> list[str]:
        return [t["uuid"] for t in store.tasks(TaskFilter(sort_by=sort_by))]

    assert ids("name") == ["t3", "t1", "t2"]
    assert ids("-received") == ["t1", "t3", "t2"]
    with pytest.raises(ValueError, match="cannot sort by 'args'"):
        ids("args")
