"""What every result backend must do, checked on each one against its real server."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from caraway import Caraway, states
from caraway.canvas.chords import count_group_success
from caraway.engines.base.backend import Backend
from caraway.exceptions import TimeoutError
from caraway.request import Context
from caraway.result import GroupResult, ResultSet


def test_a_stored_result_reads_back_with_celerys_meta(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    backend.store_result(task_id, {"answer": 42}, states.SUCCESS)

    meta = backend.get_task_meta(task_id)

    assert meta["status"] == states.SUCCESS
    assert meta["result"] == {"answer": 42}
    assert meta["task_id"] == task_id
    assert meta["date_done"].endswith("+00:00")


def test_an_unknown_task_is_pending(backend: Backend) -> None:
    assert backend.get_task_meta(str(uuid.uuid4()))["status"] == states.PENDING


def test_a_failure_rebuilds_the_exception(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    backend.mark_as_failure(task_id, KeyError("missing"), "Traceback: ...")

    meta = backend.get_task_meta(task_id)
    exc = backend.exception_from_meta(meta)

    assert meta["status"] == states.FAILURE
    assert isinstance(exc, KeyError)
    assert exc.args == ("missing",)
    assert meta["traceback"] == "Traceback: ..."


def test_success_is_never_overwritten_by_a_later_state(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    backend.mark_as_done(task_id, 1)
    backend.store_result(task_id, {"pid": 1}, states.STARTED)
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS


def test_forget_deletes_the_result(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    backend.mark_as_done(task_id, 1)
    backend.forget(task_id)
    assert backend.get_task_meta(task_id)["status"] == states.PENDING


def test_results_expire(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    backend.expires = 1
    backend.mark_as_done(task_id, 1)
    assert backend.get_task_meta(task_id)["status"] == states.SUCCESS
    time.sleep(1.3)
    backend.cleanup()
    assert backend.get_task_meta(task_id)["status"] == states.PENDING


def test_wait_for_wakes_when_the_result_arrives(backend: Backend) -> None:
    task_id = str(uuid.uuid4())
    writer = threading.Timer(0.2, backend.mark_as_done, (task_id, "done"))
    writer.start()
    started = time.monotonic()

    meta = backend.wait_for(task_id, timeout=5, interval=0.5)

    assert meta["result"] == "done"
    assert time.monotonic() - started < 1.0
    writer.join()


def test_wait_for_times_out(backend: Backend) -> None:
    with pytest.raises(TimeoutError):
        backend.wait_for(str(uuid.uuid4()), timeout=0.3)


def test_groups_save_and_restore(backend: Backend) -> None:
    group_id = str(uuid.uuid4())
    tuples = [[[str(uuid.uuid4()), None], None], [[str(uuid.uuid4()), None], None]]
    backend.save_group(group_id, [[group_id, None], tuples])

    assert backend.restore_group(group_id) == [[group_id, None], tuples]
    backend.delete_group(group_id)
    assert backend.restore_group(group_id) is None


def test_counters_are_atomic_under_concurrency(backend: Backend) -> None:
    key = f"counter-{uuid.uuid4()}"

    def bump() -> None:
        for _ in range(50):
            backend.incr(key, ttl=60)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert backend.incr(key, 0, ttl=60) == 200


def test_many_results_read_back_in_order_with_pending_for_the_unknown(backend: Backend) -> None:
    done, failed, unknown = (str(uuid.uuid4()) for _ in range(3))
    backend.mark_as_done(done, "value")
    backend.mark_as_failure(failed, KeyError("k"), "Traceback: ...")

    metas = backend.get_many_task_meta([done, unknown, failed])

    assert [m["status"] for m in metas] == [states.SUCCESS, states.PENDING, states.FAILURE]
    assert [m["task_id"] for m in metas] == [done, unknown, failed]
    assert metas[0]["result"] == "value"


def test_a_group_counts_the_successes_its_get_returned(backend_app: Caraway) -> None:
    """A worker stores a member's result, then counts it for ``completed_count``: a client
    reading between the two must not see 2 of 3 once ``get()`` returned all three."""
    backend = backend_app.backend
    group_id, ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    for n, task_id in enumerate(ids):
        backend.mark_as_done(task_id, n)
    for n in range(2):  # the third worker has not counted yet
        count_group_success(backend_app, Context(id=ids[n], group=group_id, group_index=n))
    members = GroupResult(group_id, [backend_app.AsyncResult(i) for i in ids], app=backend_app)

    assert members.get(timeout=5) == [0, 1, 2]
    assert members.completed_count() == 3


def test_a_result_set_reads_its_members_state(backend_app: Caraway) -> None:
    backend = backend_app.backend
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for task_id in ids[:3]:
        backend.mark_as_done(task_id, task_id[:4])
    members = ResultSet([backend_app.AsyncResult(task_id) for task_id in ids], app=backend_app)

    assert (members.ready(), members.waiting(), members.completed_count()) == (False, True, 3)
    backend.mark_as_failure(ids[3], ValueError("late"), "")
    assert (members.ready(), members.failed(), members.successful()) == (True, True, False)
    joined = members.join(timeout=5, propagate=False)
    assert joined[:3] == [task_id[:4] for task_id in ids[:3]]
    assert isinstance(joined[3], ValueError)
