"""Canvas shapes Celery's own integration suite checks, on a real worker with Redis broker
and results (the backend with Celery's native chord join)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from services import delete_redis_prefixed, require
from worker_support import WAIT, ThreadedWorker, wait_until

from caraway import Celery, chain, chord, group
from caraway.exceptions import ChordError
from caraway.result import GroupResult


@pytest.fixture(scope="module")
def shapes() -> Iterator[SimpleNamespace]:
    host, port = require("redis")
    prefix = f"shapes-{uuid.uuid4().hex[:10]}:"
    options = {"global_keyprefix": prefix}
    app = Celery(
        "shapes", broker=f"redis://{host}:{port}/0", backend=f"redis://{host}:{port}/1",
        broker_transport_options=options, result_backend_transport_options=options,
    )  # fmt: skip
    ran = threading.Event()
    lock = threading.Lock()
    calls: list[str] = []

    @app.task(name="shapes.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="shapes.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="shapes.fail")
    def fail(*args: Any) -> None:
        raise ValueError("expected")

    @app.task(name="shapes.record")
    def record(label: str) -> str:
        with lock:
            calls.append(label)
        return label

    @app.task(name="shapes.starts_a_chain")
    def starts_a_chain() -> Any:
        return (add.s(1, 1) | add.s(2))()

    @app.task(name="shapes.replaced_by_failing_chain", bind=True)
    def replaced_by_failing_chain(self: Any, value: Any) -> Any:
        inner = chain(add.si(1, 1), fail.s())
        inner.link_error(record.si("inner errback"))
        return self.replace(inner)

    @app.task(name="shapes.mark")
    def mark(value: int) -> int:
        ran.set()
        return value

    worker = ThreadedWorker(app, pool="threads", concurrency=4).start()
    try:
        yield SimpleNamespace(
            app=app, add=add, tsum=tsum, mark=mark, ran=ran, fail=fail, record=record,
            calls=calls, starts_a_chain=starts_a_chain,
            replaced_by_failing_chain=replaced_by_failing_chain,
        )  # fmt: skip
    finally:
        worker.stop()
        delete_redis_prefixed(prefix)
        app.close()


def test_a_group_of_one_chain_ending_in_a_group_gives_that_groups_results(
    shapes: SimpleNamespace,
) -> None:
    add = shapes.add

    result = group(add.s(1, 2) | group(add.s(1), add.s(2)))()

    assert isinstance(result, GroupResult)
    assert result.get(timeout=WAIT) == [4, 5]
    assert chain(add.s(1, 2), group(add.s(1), add.s(2)))().get(timeout=WAIT) == [4, 5]


def test_a_generator_chord_header_is_sent_as_it_is_read(shapes: SimpleNamespace) -> None:
    mark, tsum = shapes.mark, shapes.tsum
    seen_before_last: list[bool] = []

    def header(size: int) -> Iterator[Any]:
        for value in range(size):
            if value == size - 1:  # the first task ran before the generator was read out
                seen_before_last.append(shapes.ran.wait(WAIT))
            yield mark.s(value)

    shapes.ran.clear()
    assert chord(header(4), tsum.s())().get(timeout=WAIT) == 6
    assert seen_before_last == [True]
    assert chord((mark.s(v) for v in range(0)), tsum.s())().get(timeout=WAIT) == 0


def test_empty_chains_in_a_group_or_a_chord_header_are_left_out(shapes: SimpleNamespace) -> None:
    add, tsum = shapes.add, shapes.tsum

    result = group(chain(), add.s(1, 2), chain(), add.s(3, 4)).apply_async()

    assert len(result.results) == 2
    assert result.get(timeout=WAIT) == [3, 7]
    assert chord([chain()], tsum.s())().get(timeout=WAIT) == 0
    assert chord([chain(), add.s(1, 1), chain(), add.s(2, 2)], tsum.s())().get(timeout=WAIT) == 6


def test_a_chord_applied_with_a_task_id_gives_its_body_that_id(shapes: SimpleNamespace) -> None:
    add, tsum = shapes.add, shapes.tsum
    wanted, chained = str(uuid.uuid4()), str(uuid.uuid4())

    result = chord([add.si(1, 1), add.si(2, 2)], tsum.s()).apply_async(task_id=wanted)
    body_chain = chain(tsum.s(), group(add.s(1), add.s(2)), tsum.s())
    chain_result = chord([add.si(1, 1)], body_chain).apply_async(task_id=chained)

    assert result.id == wanted
    assert result.get(timeout=WAIT) == 6
    assert chain_result.id == chained
    assert chain_result.get(timeout=WAIT) == 7  # 2, then 3 and 4

    frozen_id = str(uuid.uuid4())
    frozen = chord([add.si(1, 1)], chain(tsum.s(), group(add.s(1), add.s(2)), tsum.s()))
    assert frozen.freeze(frozen_id).id == frozen_id, "a chain body: its last step's id"
    assert frozen.apply_async(task_id=frozen_id).get(timeout=WAIT) == 7


def test_a_failed_inner_chord_fails_the_outer_chord_and_runs_its_errback_once(
    shapes: SimpleNamespace,
) -> None:
    add, fail, record, calls = shapes.add, shapes.fail, shapes.record, shapes.calls
    calls.clear()
    inner = chord([add.si(1, 1), fail.si()], add.si(2, 2))
    outer = chord(group([add.si(3, 3), inner]), record.si("outer body"))
    outer.link_error(record.si("outer errback"))

    result = outer.delay()

    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=WAIT)
    wait_until(lambda: calls == ["outer errback"], what="the outer chord's errback")


def test_an_errback_set_as_one_signature_on_a_group_body_runs_when_the_header_fails(
    shapes: SimpleNamespace,
) -> None:
    add, fail, tsum, record, calls = (
        shapes.add, shapes.fail, shapes.tsum, shapes.record, shapes.calls,
    )  # fmt: skip
    calls.clear()
    first = tsum.s().set(link_error=record.si("own"))

    result = chord([add.si(1, 1), fail.si()], group(first, tsum.s())).apply_async()

    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=WAIT)
    wait_until(lambda: calls == ["own"], what="the body member's errback")


def test_one_signature_repeated_in_a_nested_chord_header_counts_each_time(
    shapes: SimpleNamespace,
) -> None:
    mark = shapes.mark
    repeated = mark.si(4)
    child = chord(
        (
            repeated,
            chain((repeated,) * 3),
            group((repeated,) * 3),
            chord((repeated,) * 3, mark.si(9)),
        ),
        mark.s(),
    )

    assert group((child,)).delay().get(timeout=WAIT) == [[4, 4, 4, 4, 4, 9]]
    nested = chord((group((repeated,) * 3),), mark.s())
    assert group((nested,)).delay().get(timeout=WAIT) == [[4, 4, 4]]


def test_a_task_returning_the_result_of_a_canvas_stores_its_id_tree(
    shapes: SimpleNamespace,
) -> None:
    (last_id, parent), children = shapes.starts_a_chain.delay().get(timeout=WAIT)

    assert children is None
    (first_id, grandparent), _ = parent
    assert grandparent is None
    assert shapes.app.AsyncResult(last_id).get(timeout=WAIT) == 4
    assert shapes.app.AsyncResult(first_id).get(timeout=WAIT) == 2


def test_a_task_replaced_by_a_chain_with_an_errback_keeps_its_own_chains_errback_too(
    shapes: SimpleNamespace,
) -> None:
    add, record, calls = shapes.add, shapes.record, shapes.calls
    calls.clear()
    outer = chain(add.s(1, 1), shapes.replaced_by_failing_chain.s(), add.s(1))
    outer.link_error(record.si("outer errback"))

    result = outer.delay()

    with pytest.raises(ValueError, match="expected"):
        result.get(timeout=WAIT)
    wait_until(lambda: sorted(calls) == ["inner errback", "outer errback"], what="both errbacks")


def test_a_chord_with_a_group_body_raises_the_failed_header_tasks_own_exception(
    shapes: SimpleNamespace,
) -> None:
    add, fail = shapes.add, shapes.fail

    result = chain(group(add.si(15, 7), fail.si()), group(add.si(9, 7), add.si(5, 7)))()

    with pytest.raises(ValueError, match="expected"):
        result.get(timeout=WAIT)


def test_a_chain_ending_in_a_group_gives_a_chord_header_its_list(
    shapes: SimpleNamespace,
) -> None:
    add = shapes.add
    inner = chain(add.si(1, 200), group(add.si(1, 1000), add.si(1, 2000)))

    result = chain(add.si(1, 0), group(add.si(1, 100), inner), add.si(1, 10))()

    assert result.get(timeout=WAIT) == 11
    tail = chain(add.si(40, 2), group(add.s(0), add.s(0)))
    assert chord(group(tail), shapes.mark.s())().get(timeout=WAIT) == [[42, 42]], "one list"


def test_a_chain_bodys_own_errback_runs_once_when_the_chords_header_fails(
    shapes: SimpleNamespace,
) -> None:
    add, fail, tsum, record, calls = (
        shapes.add, shapes.fail, shapes.tsum, shapes.record, shapes.calls,
    )  # fmt: skip
    calls.clear()
    body = chain(tsum.s(), group(add.s(1), add.s(2)), tsum.s())
    body.link_error(record.si("chain errback"))

    result = chord(group(fail.si(), add.si(1, 2)), body).delay()

    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=WAIT)
    wait_until(lambda: calls == ["chain errback"], what="the chain body's errback")
    assert not shapes.app.AsyncResult(result.id).successful()


def test_a_failed_chords_body_lists_the_errbacks_sent_for_it_as_its_children(
    shapes: SimpleNamespace,
) -> None:
    add, fail, tsum, mark = shapes.add, shapes.fail, shapes.tsum, shapes.mark
    body = tsum.s().on_error(mark.s())  # old style: sent as a task, given the body's id

    result = chord([add.si(1, 2), fail.si()], body)()

    with pytest.raises(ValueError, match="expected"):
        result.get(timeout=WAIT)
    (errbacks,) = result.children
    assert isinstance(errbacks, GroupResult)
    assert errbacks.get(timeout=WAIT) == [result.id]


def test_a_chain_failing_before_the_group_it_ends_in_raises_the_failure(
    shapes: SimpleNamespace,
) -> None:
    """Celery on Redis waits for ever here (its own test is an xfail, issue #6437)."""
    add, fail = shapes.add, shapes.fail

    result = (add.s(1, 1) | fail.s() | group(add.s(1), add.s(1))).delay()

    with pytest.raises(ValueError, match="expected"):
        result.get(timeout=WAIT)


def test_a_one_member_group_in_a_chain_runs_as_its_task(shapes: SimpleNamespace) -> None:
    add = shapes.add

    assert chain(group(add.s(0, 0)), add.s(-1)).delay().get(timeout=WAIT) == -1
    assert chain(add.s(1, 1), group(add.s(1))).delay().get(timeout=WAIT) == 3
    assert chain(group(add.s(1, 1) | add.s(1)), add.s(1)).delay().get(timeout=WAIT) == 4
