"""Canvas across libraries: a chain, a group and a chord sent by a real Celery 5.7 client run
on a caraway worker, and the reverse, with the results read by the sender; and one chord
whose header tasks run on both kinds of worker, joined on Celery's Redis keys
(docs/celery-wire.md §6.5)."""

from __future__ import annotations

from typing import Any

import pytest
from interop_support import WAIT, Wire, Workers

TO_CARAWAY = "canvas.to.caraway"
TO_CELERY = "canvas.to.celery"


@pytest.fixture(scope="module")
def started(workers: Workers) -> Workers:
    workers.start("caraway", TO_CARAWAY, ready=False)
    workers.start("celery", TO_CELERY, ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


def _canvas(client: Any) -> Any:
    """The client's own ``chain``/``group``/``chord`` (celery's or caraway's)."""
    module = __import__(type(client).__module__.split(".")[0])
    return module


def _sig(client: Any, name: str, *args: Any, queue: str) -> Any:
    return client.tasks[name].s(*args).set(queue=queue)


@pytest.mark.parametrize(("sender", "queue", "runner"), [
    ("celery_client", TO_CARAWAY, "caraway"), ("caraway_client", TO_CELERY, "celery"),
])  # fmt: skip
def test_a_chain_runs_on_the_other_library(
    started: Workers, request: pytest.FixtureRequest, sender: str, queue: str, runner: str
) -> None:
    client = request.getfixturevalue(sender)
    lib = _canvas(client)

    flow = lib.chain(
        _sig(client, "interop.add", 1, 2, queue=queue),
        _sig(client, "interop.add", 10, queue=queue),
        _sig(client, "interop.echo", queue=queue),
    )
    result = flow.apply_async()

    assert result.get(timeout=WAIT) == {"value": 13, "by": runner}
    assert result.parent.get(timeout=WAIT) == 13


@pytest.mark.parametrize(("sender", "queue"), [
    ("celery_client", TO_CARAWAY), ("caraway_client", TO_CELERY),
])  # fmt: skip
def test_a_group_runs_on_the_other_library(
    started: Workers, request: pytest.FixtureRequest, sender: str, queue: str
) -> None:
    client = request.getfixturevalue(sender)
    lib = _canvas(client)

    result = lib.group(_sig(client, "interop.add", i, i, queue=queue) for i in range(5)).delay()

    assert result.get(timeout=WAIT) == [0, 2, 4, 6, 8]
    assert result.completed_count() == 5


@pytest.mark.parametrize(("sender", "queue", "runner"), [
    ("celery_client", TO_CARAWAY, "caraway"), ("caraway_client", TO_CELERY, "celery"),
])  # fmt: skip
def test_a_chord_runs_on_the_other_library(
    started: Workers, wire: Wire, request: pytest.FixtureRequest, sender: str, queue: str,
    runner: str,
) -> None:  # fmt: skip
    if wire.name != "redis":
        pytest.skip("rpc:// results cannot join chords, in Celery as in caraway")
    client = request.getfixturevalue(sender)
    lib = _canvas(client)

    header = [_sig(client, "interop.add", i, 1, queue=queue) for i in range(4)]
    result = lib.chord(header, _sig(client, "interop.tsum", queue=queue)).apply_async()

    assert result.get(timeout=WAIT) == {"sum": 1 + 2 + 3 + 4, "by": runner}


@pytest.mark.parametrize("sender", ["celery_client", "caraway_client"])
def test_one_chord_joined_by_both_kinds_of_worker(
    started: Workers, wire: Wire, request: pytest.FixtureRequest, sender: str
) -> None:
    if wire.name != "redis":
        pytest.skip("rpc:// results cannot join chords, in Celery as in caraway")
    client = request.getfixturevalue(sender)
    lib = _canvas(client)

    header = [
        _sig(client, "interop.add", i, 0, queue=TO_CARAWAY if i % 2 else TO_CELERY)
        for i in range(6)
    ]
    result = lib.chord(header, _sig(client, "interop.tsum", queue=TO_CARAWAY)).apply_async()

    assert result.get(timeout=WAIT) == {"sum": 15, "by": "caraway"}
