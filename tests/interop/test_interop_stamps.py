"""Stamps across libraries: a canvas stamped by a real Celery 5.7 client keeps its stamps on a
caraway worker, and the reverse (the ``stamped_headers``/``stamps`` headers, also in the chain
and callbacks embedded in messages); and ``revoke_by_stamped_headers`` sent by either client
is answered, and honoured, by the other library's worker."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from interop_support import WAIT, Wire, Workers, wait_until

TO_CARAWAY = "stamps.to.caraway"
TO_CELERY = "stamps.to.celery"
DIRECTIONS = [("celery_client", TO_CARAWAY, "caraway"), ("caraway_client", TO_CELERY, "celery")]


@pytest.fixture(scope="module")
def started(workers: Workers) -> Workers:
    workers.start("caraway", TO_CARAWAY, ready=False)
    workers.start("celery", TO_CELERY, ready=False)
    for worker in workers.started:
        worker.wait_ready()
    return workers


def _visitor(client: Any, stamps: dict[str, Any]) -> Any:
    """A visitor of the client's own library (celery's or caraway's ``StampingVisitor``)."""
    library = __import__(f"{type(client).__module__.split('.')[0]}.canvas").canvas

    class Fixed(library.StampingVisitor):  # type: ignore[misc, name-defined]
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return dict(stamps)

    return Fixed()


def _sig(client: Any, name: str, *args: Any, queue: str) -> Any:
    return client.tasks[name].s(*args).set(queue=queue)


@pytest.mark.parametrize(("sender", "queue", "runner"), DIRECTIONS)
def test_a_stamped_chain_and_its_callback_keep_their_stamps_on_the_other_library(
    started: Workers, wire: Wire, request: pytest.FixtureRequest, sender: str, queue: str,
    runner: str,
) -> None:  # fmt: skip
    client = request.getfixturevalue(sender)
    echo_back = _sig(client, "interop.stamps", queue=queue)
    echo_back.freeze()
    flow = _sig(client, "interop.add", 1, 2, queue=queue) | _sig(
        client, "interop.stamps", queue=queue
    )
    flow.link(echo_back)
    flow.stamp(_visitor(client, {"tenant": "acme", "ids": [4, 2]}))

    result = flow.apply_async()

    expected = {"names": ["ids", "tenant"], "stamps": {"ids": [4, 2], "tenant": "acme"},
                "by": runner}  # fmt: skip
    assert result.get(timeout=WAIT) == {"value": 3, **expected}
    if wire.name != "redis":
        return  # rpc:// sends the callback's result to the worker that sent it, not to us
    callback = client.AsyncResult(echo_back.id).get(timeout=WAIT)
    assert callback == {"value": {"value": 3, **expected}, **expected}


@pytest.mark.parametrize(("sender", "queue", "runner"), DIRECTIONS)
def test_revoke_by_stamped_headers_reaches_the_other_librarys_worker(
    started: Workers, request: pytest.FixtureRequest, sender: str, queue: str, runner: str
) -> None:
    client = request.getfixturevalue(sender)
    node = next(f"{w.name}@{socket.gethostname()}" for w in started.started if w.kind == runner)
    value = uuid.uuid4().hex  # the workers remember it for their lifetime

    replies = client.control.revoke_by_stamped_headers(
        {"batch": [value]}, destination=[node], reply=True,
        timeout=WAIT, limit=1,
    )  # fmt: skip

    assert [next(iter(r.values())) for r in replies] == [
        {"ok": f"headers {{'batch': ['{value}']}} flagged as revoked, but not terminated"}
    ]
    doomed = _sig(client, "interop.stamps", queue=queue)
    doomed.stamp(_visitor(client, {"batch": value}))
    kept = _sig(client, "interop.stamps", queue=queue)
    kept.stamp(_visitor(client, {"batch": "other"}))
    doomed_result, kept_result = doomed.apply_async(), kept.apply_async()
    assert kept_result.get(timeout=WAIT)["stamps"] == {"batch": "other"}
    wait_until(lambda: doomed_result.state == "REVOKED", what="the stamped task to be revoked")
