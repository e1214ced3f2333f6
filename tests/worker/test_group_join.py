"""``GroupResult.get()`` raises the first failure seen, as Celery's native join does: it does
not wait for the members before a failed one (on a real worker; memory and Redis results)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from services import delete_redis_prefixed, require
from worker_support import WAIT, ThreadedWorker, memory_app

from caraway import Celery, group
from caraway.exceptions import TaskRevokedError

#: Far beyond what the join may take: the held task is released only after the assertion.
HELD = WAIT


@pytest.fixture(params=["memory", "redis"])
def served(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    prefix = f"groupjoin-{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        host, port = require("redis")
        app = Celery(
            "groupjoin", broker=f"memory://groupjoin-{uuid.uuid4().hex}",
            backend=f"redis://{host}:{port}/1",
            result_backend_transport_options={"global_keyprefix": prefix},
        )  # fmt: skip
    else:
        app = memory_app("groupjoin")
    release = threading.Event()

    @app.task
    def hold() -> str:
        assert release.wait(HELD)
        return "held"

    @app.task
    def fail() -> None:
        raise ValueError("failed fast")

    @app.task
    def echo(value: str) -> str:
        return value

    worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
    yield SimpleNamespace(app=app, hold=hold, fail=fail, echo=echo, release=release)
    release.set()
    worker.stop()
    app.close()
    if request.param == "redis":
        delete_redis_prefixed(prefix, dbs=(1,))


def test_a_member_failing_while_an_earlier_one_runs_ends_the_join(
    served: SimpleNamespace,
) -> None:
    result = group([served.hold.si(), served.fail.si()]).apply_async()

    with pytest.raises(ValueError, match="failed fast"):
        result.get(timeout=HELD / 2)
    assert not result.results[0].ready()  # the join did not wait for it


def test_a_member_already_revoked_ends_the_join_before_earlier_ones_are_waited_for(
    served: SimpleNamespace,
) -> None:
    revoked = served.echo.si("never").freeze()
    served.app.control.revoke(revoked.id)
    served.echo.si("never").apply_async(task_id=revoked.id)
    with pytest.raises(TaskRevokedError):
        revoked.get(timeout=WAIT)

    # The same task in a group behind one that runs until released (Celery's test shape).
    again = served.echo.si("never").set(task_id=revoked.id)
    result = group([served.hold.si(), again]).apply_async()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=HELD / 2)
    assert not result.results[0].ready()


def test_without_propagate_the_join_waits_for_every_member_in_order(
    served: SimpleNamespace,
) -> None:
    result = group([served.hold.si(), served.fail.si()]).apply_async()
    served.release.set()

    values = result.get(timeout=WAIT, propagate=False)
    assert values[0] == "held"
    assert isinstance(values[1], ValueError)
