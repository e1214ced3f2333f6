"""Canvas on real workers: chains, groups, chords (nested too), errors, replace, add_to_chord,
chunks and map, on SQLite, Redis, RabbitMQ + Redis results, and PostgreSQL results."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from amqp_support import rabbit_vhost
from services import require
from worker_support import WAIT, ThreadedWorker, wait_until

from caraway import Celery, chain, chord, group, states
from caraway.exceptions import ChordError
from caraway.result import GroupResult


def _load_sql_factories() -> ModuleType:
    path = Path(__file__).parent.parent / "contract" / "factories_sql.py"
    spec = importlib.util.spec_from_file_location("caraway_canvas_factories_sql", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _redis_conf(prefix: str) -> dict[str, Any]:
    host, port = require("redis")
    return {
        "backend": f"redis://{host}:{port}/1",
        "result_backend_transport_options": {"global_keyprefix": prefix},
    }


def _app(kind: str, stack: ExitStack, tmp: Path) -> Celery:
    prefix = f"canvas-{uuid.uuid4().hex[:10]}:"
    if kind == "sqlite":
        return Celery("canvas", broker=f"sqlite:///{tmp}/canvas.sqlite3")
    if kind == "redis":
        host, port = require("redis")
        return Celery(
            "canvas", broker=f"redis://{host}:{port}/0",
            broker_transport_options={"global_keyprefix": prefix}, **_redis_conf(prefix),
        )  # fmt: skip
    if kind == "amqp-redis":
        url = stack.enter_context(rabbit_vhost("canvas"))
        return Celery("canvas", broker=url, **_redis_conf(prefix))
    if kind == "postgresql":
        factories = _load_sql_factories()
        url, conf = stack.enter_context(factories.sql_database("postgresql", tmp))
        return Celery("canvas", broker=f"sqlite:///{tmp}/canvas.sqlite3", backend=url, **conf)
    raise ValueError(kind)


def _cleanup_redis(app: Celery) -> None:
    import redis

    prefix = (app.conf.result_backend_transport_options or {}).get("global_keyprefix")
    if not prefix:
        return
    host, port = require("redis")
    for db in (0, 1):
        client = redis.Redis(host=host, port=port, db=db)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _more_tasks(app: Celery, add: Any) -> dict[str, Any]:
    @app.task(name="canvas.replace_by_group", bind=True)
    def replace_by_group(self: Any, value: int) -> Any:
        return self.replace(group(add.s(value, 1), add.s(value, 2)))

    @app.task(name="canvas.replace_by_chain_to_group", bind=True)
    def replace_by_chain_to_group(self: Any) -> Any:
        return self.replace(chain(add.s(1, 2), group(add.s(1), add.s(1))))

    @app.task(name="canvas.properties", bind=True)
    def properties(self: Any) -> Any:
        return self.request.properties.get("app_id")

    return {
        "replace_by_group": replace_by_group,
        "replace_by_chain_to_group": replace_by_chain_to_group,
        "properties": properties,
    }


@pytest.fixture(scope="module", params=["sqlite", "redis", "amqp-redis", "postgresql"])
def flow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    with ExitStack() as stack:
        app = _app(request.param, stack, tmp_path_factory.mktemp("canvas"))
        gate = threading.Event()
        errors: list[Any] = []

        @app.task(name="canvas.add")
        def add(x: int, y: int) -> int:
            return x + y

        @app.task(name="canvas.tsum")
        def tsum(values: list[int]) -> int:
            return sum(values)

        @app.task(name="canvas.fail")
        def fail(*args: Any) -> None:
            raise ValueError("header-broke")

        @app.task(name="canvas.wait_gate")
        def wait_gate(value: int) -> int:
            assert gate.wait(WAIT)
            return value

        @app.task(name="canvas.on_error_old")
        def on_error_old(task_id: str) -> str:
            errors.append(("old", task_id))
            return task_id

        @app.task(name="canvas.on_error_new")
        def on_error_new(request: Any, exc: BaseException, traceback: str) -> None:
            errors.append(("new", request.id, type(exc).__name__))

        @app.task(name="canvas.replacer", bind=True)
        def replacer(self: Any, value: int) -> Any:
            return self.replace(add.s(value, 10))

        @app.task(name="canvas.grower", bind=True)
        def grower(self: Any, value: int) -> int:
            self.add_to_chord(add.si(value, 1000))
            return value

        worker = ThreadedWorker(app, pool="threads", concurrency=4).start()
        try:
            yield SimpleNamespace(
                app=app, kind=request.param, add=add, tsum=tsum, fail=fail,
                wait_gate=wait_gate, gate=gate, on_error_old=on_error_old,
                on_error_new=on_error_new, errors=errors, replacer=replacer, grower=grower,
                worker=worker.worker, **_more_tasks(app, add),
            )  # fmt: skip
        finally:
            gate.set()
            worker.stop()
            _cleanup_redis(app)
            if request.param == "postgresql":
                app.backend.engine.dispose()  # shared per process: close its connections now
            app.close()


def test_a_group_returns_every_result_in_order_and_counts_them(flow: SimpleNamespace) -> None:
    add = flow.add

    result = group(add.s(i, i) for i in range(10)).apply_async()

    assert result.get(timeout=WAIT) == [2 * i for i in range(10)]
    assert (result.ready(), result.successful(), result.failed()) == (True, True, False)
    assert result.completed_count() == 10  # what get() read counts, whatever the counter says
    assert result.waiting() is False
    result.save()
    restored = GroupResult.restore(str(result.id), app=flow.app)
    assert restored is not None
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.get(timeout=WAIT) == [2 * i for i in range(10)]


def test_a_chord_passes_the_ordered_header_results_to_its_body(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    result = chord([add.s(i, 1) for i in range(5)], tsum.s())()

    assert result.get(timeout=WAIT) == sum(i + 1 for i in range(5))
    assert result.parent is not None
    assert result.parent.get(timeout=WAIT) == [1, 2, 3, 4, 5]


def test_a_group_piped_into_a_task_is_a_chord(flow: SimpleNamespace) -> None:
    result = (group(flow.add.s(1, 1), flow.add.s(2, 2)) | flow.tsum.s()).delay()

    assert result.get(timeout=WAIT) == 6


def test_a_chord_whose_body_is_a_chain(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    result = ((group(add.s(1, 1), add.s(2, 2)) | tsum.s()) | add.s(100)).delay()

    assert result.get(timeout=WAIT) == 106


def test_a_chain_inside_a_group_inside_a_chord(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    inner = group(chain(add.s(1, 1), add.s(10)), add.s(3, 3))
    result = chord([inner, add.s(0, 1)], tsum.s()).apply_async()

    assert result.get(timeout=WAIT) == 12 + 6 + 1


def test_a_chain_expands_its_group_into_a_chord_in_the_worker(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    result = chain(add.s(1, 1), group(add.s(10), add.s(20)), tsum.s()).apply_async()

    assert result.get(timeout=WAIT) == 34
    assert result.parent is not None


def test_a_chord_inside_a_chain_continues_the_chain(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    result = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s()), add.s(100)).delay()

    assert result.get(timeout=WAIT) == 107


def test_a_chain_inside_a_chord_header_counts_once(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    header = [chain(add.s(1, 1), add.s(1)), add.s(5, 5), group(add.s(1, 0), add.s(2, 0))]
    result = chord(header, tsum.s()).apply_async()

    assert result.get(timeout=WAIT) == 3 + 10 + 1 + 2


def test_a_chain_ending_in_a_group_gives_a_group_result(flow: SimpleNamespace) -> None:
    add = flow.add

    result = chain(add.s(1, 1), group(add.s(1), add.s(2))).delay()

    assert result.get(timeout=WAIT) == [3, 4]


def test_a_failing_header_task_fails_the_body_at_once(flow: SimpleNamespace) -> None:
    flow.gate.clear()
    header = [flow.fail.s(), flow.wait_gate.s(1), flow.wait_gate.s(2)]
    result = chord(header, flow.tsum.s()).apply_async()
    failing_id = result.parent.results[0].id
    body = flow.app.AsyncResult(result.id)  # no parents: read the body's own state
    try:
        with pytest.raises(ChordError, match=f"Dependency {failing_id} raised ValueError"):
            body.get(timeout=WAIT)
        assert [r.ready() for r in result.parent.results[1:]] == [False, False]
    finally:
        flow.gate.set()
    assert result.parent.results[1].get(timeout=WAIT) == 1
    assert result.state == states.FAILURE


def test_a_chord_result_raises_the_failed_header_tasks_own_exception(
    flow: SimpleNamespace,
) -> None:
    result = chord([flow.add.s(1, 1), flow.fail.s()], flow.tsum.s()).apply_async()

    # Celery's get() follows the parents: the header's ValueError, not the body's ChordError.
    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    with pytest.raises(ChordError):
        flow.app.AsyncResult(result.id).get(timeout=WAIT)


def test_a_revoked_header_task_fails_the_chord(flow: SimpleNamespace) -> None:
    doomed_id = str(uuid.uuid4())
    flow.app.control.revoke(doomed_id)
    wait_until(lambda: flow.worker.state.is_revoked(doomed_id), what="the worker to learn it")

    header = [flow.add.s(1, 1), flow.add.s(2, 2).set(task_id=doomed_id)]
    result = chord(header, flow.tsum.s()).apply_async()

    with pytest.raises(ChordError, match=f"Dependency {doomed_id} raised TaskRevokedError"):
        flow.app.AsyncResult(result.id).get(timeout=WAIT)


def test_an_unknown_header_task_fails_the_chord_instead_of_stalling_it(
    flow: SimpleNamespace,
) -> None:
    header = [flow.add.s(1, 1), flow.app.signature("canvas.not_registered_anywhere")]
    result = chord(header, flow.tsum.s()).apply_async()
    unknown_id = result.parent.results[1].id

    with pytest.raises(ChordError, match=f"Dependency {unknown_id} raised NotRegistered"):
        flow.app.AsyncResult(result.id).get(timeout=WAIT)


def test_a_chain_stops_at_the_failing_step_and_its_result_fails(flow: SimpleNamespace) -> None:
    add = flow.add

    result = chain(add.s(1, 1), flow.fail.s(), add.s(1)).delay()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    # get() raises as soon as any step failed; the last step's FAILURE is stored just after.
    wait_until(lambda: flow.app.AsyncResult(result.id).state == states.FAILURE)
    assert result.parent.state == states.FAILURE
    assert result.parent.parent.get(timeout=WAIT) == 2


def test_errbacks_of_both_signatures_run_for_a_failing_task(flow: SimpleNamespace) -> None:
    sig = flow.fail.s()
    sig.link_error(flow.on_error_old.s())
    sig.link_error(flow.on_error_new.s())

    result = sig.delay()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    wait_until(lambda: ("old", result.id) in flow.errors, what="the old-style errback")
    wait_until(lambda: ("new", result.id, "ValueError") in flow.errors, what="the new-style one")


def test_a_failing_chord_header_runs_the_body_errbacks(flow: SimpleNamespace) -> None:
    body = flow.tsum.s()
    body.link_error(flow.on_error_old.s())
    body.link_error(flow.on_error_new.s())

    result = chord([flow.add.s(1, 1), flow.fail.s()], body).apply_async()

    with pytest.raises(ChordError):
        flow.app.AsyncResult(result.id).get(timeout=WAIT)
    wait_until(lambda: ("old", result.id) in flow.errors, what="the body's errback")
    wait_until(lambda: ("new", result.id, "ChordError") in flow.errors, what="the new-style one")


def test_a_failing_chord_body_runs_its_errbacks(flow: SimpleNamespace) -> None:
    body = flow.fail.s()
    body.link_error(flow.on_error_old.s())

    result = chord([flow.add.s(1, 1)], body).apply_async()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    wait_until(lambda: ("old", result.id) in flow.errors, what="the body's errback")


def test_a_replaced_task_keeps_its_place_in_a_chain(flow: SimpleNamespace) -> None:
    result = chain(flow.add.s(1, 1), flow.replacer.s(), flow.add.s(1)).delay()

    assert result.get(timeout=WAIT) == 13
    replaced = result.parent
    assert replaced.get(timeout=WAIT) == 12


def test_a_replaced_task_keeps_its_place_in_a_chord(flow: SimpleNamespace) -> None:
    result = chord([flow.replacer.s(1), flow.add.s(2, 2)], flow.tsum.s()).apply_async()

    assert result.get(timeout=WAIT) == 11 + 4


def test_add_to_chord_makes_the_body_wait_for_one_more(flow: SimpleNamespace) -> None:
    result = chord([flow.grower.s(1), flow.add.s(2, 2)], flow.tsum.s()).apply_async()

    assert result.get(timeout=WAIT) == 1 + 4 + 1001


def test_chunks_map_and_starmap(flow: SimpleNamespace) -> None:
    add = flow.add

    chunked = add.chunks([(i, i) for i in range(7)], 3).apply_async()
    mapped = flow.tsum.map([[1, 2], [3]]).apply_async()
    starmapped = add.starmap([(1, 2), (3, 4)]).apply_async()

    assert chunked.get(timeout=WAIT) == [[0, 2, 4], [6, 8, 10], [12]]
    assert mapped.get(timeout=WAIT) == [3, 3]
    assert starmapped.get(timeout=WAIT) == [3, 7]


def test_collect_walks_the_children_of_a_task(flow: SimpleNamespace) -> None:
    add = flow.add

    result = add.apply_async((1, 1), link=add.s(10))
    result.get(timeout=WAIT)
    if flow.kind == "postgresql":
        assert result.children == [], "Celery's SQL table keeps no children, nor do we"
        return
    child = wait_until(lambda: result.children)[0]
    child.get(timeout=WAIT)

    assert [value for _, value in result.collect(timeout=WAIT)] == [2, 12]


def test_message_properties_given_by_the_caller_reach_the_request(flow: SimpleNamespace) -> None:
    """Not canvas, but these workers cover every broker: ``app_id`` travels as in Celery."""
    assert flow.properties.apply_async(app_id="1234").get(timeout=WAIT) == "1234"


def test_a_chain_failing_inside_a_chord_header_fails_the_chord_and_runs_its_errback(
    flow: SimpleNamespace,
) -> None:
    header = [chain(flow.add.si(1, 1), flow.fail.s(), flow.add.si(1, 1))]
    sig = chord(header, flow.tsum.s())
    sig.link_error(flow.on_error_old.si("header-chain"))

    result = sig.delay()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    with pytest.raises(ChordError):  # the body is failed, not left waiting for ever
        flow.app.AsyncResult(result.id).get(timeout=WAIT)
    wait_until(lambda: ("old", "header-chain") in flow.errors, what="the chord's errback")


def test_a_chains_errback_runs_whichever_step_fails(flow: SimpleNamespace) -> None:
    body = chain(flow.add.si(1, 1), flow.fail.s(), flow.add.si(1, 1))
    sig = chord([flow.add.si(1, 1)], body)
    sig.link_error(flow.on_error_old.si("body-chain"))

    result = sig.delay()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    wait_until(lambda: ("old", "body-chain") in flow.errors, what="the body chain's errback")
    assert flow.errors.count(("old", "body-chain")) == 1


def test_an_inner_chains_errback_survives_flattening(flow: SimpleNamespace) -> None:
    inner = chain(flow.add.si(1, 1), flow.fail.s())
    inner.link_error(flow.on_error_old.si("inner-chain"))

    result = chain(inner, flow.add.s(1)).delay()

    with pytest.raises(ValueError, match="header-broke"):
        result.get(timeout=WAIT)
    wait_until(lambda: ("old", "inner-chain") in flow.errors, what="the inner chain's errback")


def test_a_failed_chord_fails_the_chord_after_it_in_a_chain(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum
    inner = chain(chord([flow.fail.s(), flow.fail.s()], tsum.s()), chord([add.s(1)], tsum.s()))

    result = group(inner, add.s(1, 1))()

    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=WAIT)
    # The group waited on its members' own results (Celery's native join), not their parents.
    assert result.results[0].state == states.FAILURE


def test_empty_groups_in_a_chain_are_skipped(flow: SimpleNamespace) -> None:
    add, tsum = flow.add, flow.tsum

    assert chain(group(add.s(2, 2), add.s(4, 4)), group(), group())().get(timeout=WAIT) == [4, 8]
    flow_with_body = chain(group(add.s(2, 2), add.s(4, 4)), group(), tsum.s())
    assert flow_with_body.apply_async().get(timeout=WAIT) == 12
    assert chain(group(), add.s(10)).apply_async((5,)).get(timeout=WAIT) == 15


def test_a_task_replaced_by_a_group_or_a_chain_ending_in_one_gives_the_groups_results(
    flow: SimpleNamespace,
) -> None:
    assert flow.replace_by_group.delay(10).get(timeout=WAIT) == [11, 12]
    assert flow.replace_by_chain_to_group.delay().get(timeout=WAIT) == [4, 4]
