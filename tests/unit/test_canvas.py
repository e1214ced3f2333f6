"""Signatures and chains: building them, their dict form, and the messages they send."""

from __future__ import annotations

import base64
import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, Signature, chain, chord, group, maybe_signature, signature
from caraway.engines.base.broker import Outgoing
from caraway.exceptions import NotRegistered
from caraway.protocol import parse_task_message
from caraway.serialization import json_dumps, json_loads
from caraway.task import Task

JSON = frozenset({"application/json"})


@pytest.fixture
def add(app: Caraway) -> Task[Any, Any]:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


def _embed(outgoing: Outgoing) -> dict[str, Any]:
    embed: dict[str, Any] = json.loads(json_dumps(parse_task_message(outgoing.message, JSON).embed))
    return embed


# --- building -----------------------------------------------------------------------------


def test_s_holds_partial_arguments_in_celerys_dict_form(add: Task[Any, Any]) -> None:
    sig = add.s(2, y=3)

    assert isinstance(sig, Signature)
    assert dict(sig) == {
        "task": "proj.add", "args": [2], "kwargs": {"y": 3}, "options": {},
        "subtask_type": None, "immutable": False,
    }  # fmt: skip
    assert (sig.task, sig.args, sig.kwargs, sig.immutable) == ("proj.add", (2,), {"y": 3}, False)
    assert repr(sig) == "proj.add(2, y=3)"


def test_si_is_immutable_and_keeps_options_clean(add: Task[Any, Any]) -> None:
    sig = add.si(1, 2)

    assert sig.immutable is True
    assert sig["immutable"] is True
    assert sig.options == {}
    assert repr(sig) == "proj.add(1, 2)!"


def test_signature_with_options(add: Task[Any, Any]) -> None:
    sig = add.signature((1, 2), countdown=3, queue="q")

    assert sig.options == {"countdown": 3, "queue": "q"}
    assert sig.args == (1, 2), "a tuple, as Celery gives it"


def test_clone_prepends_args_merges_kwargs_and_options(add: Task[Any, Any]) -> None:
    sig = add.s(2).set(queue="q")

    clone = sig.clone(args=(1,), kwargs={"z": 0}, countdown=5)

    assert clone.args == (1, 2)
    assert clone.kwargs == {"z": 0}
    assert clone.options == {"queue": "q", "countdown": 5}
    assert sig.args == (2,)
    assert sig.options == {"queue": "q"}, "the original is untouched"
    assert clone.type is add


def test_clone_of_an_immutable_signature_ignores_new_args(add: Task[Any, Any]) -> None:
    sig = add.si(1, 2)

    assert sig.clone(args=(99,)).args == (1, 2)


def test_set_updates_options_in_place_and_can_make_immutable(add: Task[Any, Any]) -> None:
    sig = add.s(1)

    returned = sig.set(queue="other", priority=5, immutable=True)

    assert returned is sig
    assert sig.options == {"queue": "other", "priority": 5}
    assert sig.immutable is True


def test_partial_args_are_prepended_when_called(add: Task[Any, Any]) -> None:
    sig = add.s(10)

    assert sig(5) == 15
    assert sig.apply((5,)).get() == 15
    assert add.si(1, 2).apply((100,)).get() == 3


def test_freeze_fixes_the_id_before_sending(add: Task[Any, Any], published: list[Outgoing]) -> None:
    sig = add.s(1, 2)

    frozen = sig.freeze()
    sent = sig.delay()

    assert frozen.id == sig.id == sent.id
    assert published[0].message.headers["id"] == frozen.id


def test_signature_from_dict_and_by_name(app: Caraway, add: Task[Any, Any]) -> None:
    wire = json_loads(json_dumps(add.s(1, 2).set(countdown=3)))

    sig = signature(wire, app=app)

    assert isinstance(sig, Signature)
    assert sig.type is add
    assert sig.options == {"countdown": 3}
    by_name = app.signature("proj.add", args=(4, 5))
    assert by_name.apply().get() == 9


def test_maybe_signature_accepts_dicts_and_signatures(app: Caraway, add: Task[Any, Any]) -> None:
    sig = add.s(1)

    assert maybe_signature(sig) is sig
    assert maybe_signature(dict(sig), app) == sig
    with pytest.raises(TypeError):
        maybe_signature("proj.add")


def test_signatures_survive_copy_and_pickle(add: Task[Any, Any]) -> None:
    sig = add.s(1).set(queue="q")

    for copied in (copy.deepcopy(sig), pickle.loads(pickle.dumps(sig))):
        assert copied == sig
        assert isinstance(copied, Signature)


def test_unknown_task_signature_sends_by_name(app: Caraway, published: list[Outgoing]) -> None:
    sig = signature("remote.task", args=(1,), kwargs={"a": 1}, queue="q1", app=app)

    sig.delay(0)

    message = published[0].message
    assert message.headers["task"] == "remote.task"
    assert message.headers["argsrepr"] == "(0, 1)"
    assert published[0].queue == "q1"
    with pytest.raises(NotRegistered):
        sig.apply()


def test_link_on_a_signature_becomes_a_callback(
    add: Task[Any, Any], published: list[Outgoing]
) -> None:
    sig = add.s(1, 2)
    sig.link(add.s(10))
    sig.link_error(add.si(0, 0))

    sig.delay()

    embed = _embed(published[0])
    assert [c["args"] for c in embed["callbacks"]] == [[10]]
    assert [e["immutable"] for e in embed["errbacks"]] == [True]


# --- chains -------------------------------------------------------------------------------


def test_pipe_builds_a_flat_chain(add: Task[Any, Any]) -> None:
    flow = (add.s(1) | add.s(2)) | (add.s(3) | add.si(4, 4))

    assert isinstance(flow, chain)
    assert [step.args for step in flow.tasks] == [(1,), (2,), (3,), (4, 4)]
    assert flow["task"] == "celery.chain"
    assert flow.subtask_type == "chain"
    assert repr(flow) == "proj.add(1) | proj.add(2) | proj.add(3) | proj.add(4, 4)!"


def test_chain_message_has_the_reversed_chain_embed(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing], captures_dir: Path
) -> None:
    result = (add.s(1, 2) | add.s(10) | add.si(5, 5)).delay()

    assert len(published) == 1, "one message, for the first step"
    first = published[0].message
    assert first.headers["argsrepr"] == "(1, 2)"
    steps = _embed(published[0])["chain"]
    captured = json.loads((captures_dir / "redis_messages.json").read_text())["chain"]["keys"]
    captured_body = base64.b64decode(captured["celery"]["messages"][0]["body"])
    captured_steps = json.loads(captured_body)[2]["chain"]
    strip = ("task_id", "reply_to")
    for mine, theirs in zip(steps, captured_steps, strict=True):
        assert list(mine) == list(theirs)
        for key in ("args", "kwargs", "subtask_type", "immutable"):
            assert mine[key] == theirs[key], key
        assert (mine["task"], theirs["task"]) == ("proj.add", "capapp.add")
        assert list(mine["options"]) == list(theirs["options"]) == list(strip)
        assert mine["options"]["reply_to"] == app.oid == first.properties["reply_to"]
    assert steps[0]["options"]["task_id"] == result.id


def test_chain_runs_step_by_step_as_a_worker_would(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing]
) -> None:
    from caraway.engines.base.broker import Delivery
    from caraway.execution import execute
    from caraway.worker.job import Job

    result = chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()
    for index in range(3):
        outgoing = published[index]
        call = parse_task_message(outgoing.message, JSON)
        job = Job(Delivery(outgoing.message, outgoing.queue, None), call, add, "w1@test")
        execute(add, job.request)

    headers = [o.message.headers for o in published]
    assert [parse_task_message(o.message, JSON).args for o in published] == [
        [1, 2], [3, 10], [13, 100],
    ]  # fmt: skip
    first_chain = _embed(published[0])["chain"]
    assert [step["options"]["task_id"] for step in reversed(first_chain)] == [
        headers[1]["id"], headers[2]["id"],
    ]  # fmt: skip
    assert [step["args"] for step in _embed(published[1])["chain"]] == [[100]]
    assert _embed(published[2])["chain"] == []
    assert headers[1]["parent_id"] == headers[0]["id"]
    assert headers[2]["parent_id"] == headers[1]["id"]
    assert headers[1]["root_id"] == headers[2]["root_id"] == headers[0]["id"]
    assert result.get(timeout=1) == 113
    assert app.backend.get_task_meta(headers[1]["id"])["parent_id"] == headers[0]["id"]


def test_chain_apply_runs_every_step_here(add: Task[Any, Any]) -> None:
    result = chain(add.s(1, 2), add.s(10), add.si(5, 5), add.s(1)).apply()

    assert result.get() == 11


def test_chain_under_always_eager_runs_every_step(app: Caraway, add: Task[Any, Any]) -> None:
    app.conf.task_always_eager = True

    result = (add.s(1, 2) | add.s(10) | add.s(100)).delay()

    assert result.get() == 113
    assert app.broker.size("celery") == 0


def test_chain_dict_round_trips(app: Caraway, add: Task[Any, Any]) -> None:
    flow = chain(add.s(1, 2), add.s(3))

    back = Signature.from_dict(json_loads(json_dumps(flow)), app)

    assert isinstance(back, chain)
    assert [step.args for step in back.tasks] == [(1, 2), (3,)]
    assert back.apply().get() == 6


def test_empty_chain_cannot_be_sent(app: Caraway) -> None:
    with pytest.raises(ValueError, match="empty chain"):
        chain(app=app).apply_async()


# --- callbacks as a worker publishes them (docs/celery-wire.md §1.5, §6.2) ------------------------


def _run_as_worker(app: Caraway, outgoing: Outgoing) -> None:
    from caraway.engines.base.broker import Delivery
    from caraway.execution import execute
    from caraway.worker.job import Job

    call = parse_task_message(outgoing.message, JSON)
    task = app.tasks[call.name]
    job = Job(Delivery(outgoing.message, outgoing.queue, None), call, task, "w1@test")
    execute(task, job.request)


def test_link_callback_gets_the_result_prepended_and_is_a_child(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing]
) -> None:
    @app.task(name="proj.echo")
    def echo(value: Any) -> Any:
        return value

    parent = add.apply_async((1, 2), link=echo.s())
    _run_as_worker(app, published[0])

    callback = published[1].message.headers
    assert callback["task"] == "proj.echo"
    assert parse_task_message(published[1].message, JSON).args == [3]
    assert callback["argsrepr"] == "(3,)"
    assert callback["parent_id"] == parent.id
    assert callback["root_id"] == parent.id
    assert callback["id"] != parent.id
    assert app.backend.get_task_meta(parent.id)["children"] == [[[callback["id"], None], None]]


def test_errback_is_published_with_the_failed_task_id(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.fail")
    def fail() -> None:
        raise ValueError("linkerr")

    @app.task(name="proj.on_error")
    def on_error(task_id: str) -> str:
        return task_id

    failed = fail.apply_async(link_error=on_error.s())
    _run_as_worker(app, published[0])

    errback = published[1].message
    assert errback.headers["task"] == "proj.on_error"
    assert parse_task_message(errback, JSON).args == [failed.id]
    assert errback.headers["parent_id"] == failed.id
    assert app.backend.get_task_meta(failed.id)["status"] == "FAILURE"


@pytest.mark.parametrize("stored", ["args", "kwargs"])
def test_an_errback_with_stored_arguments_is_old_style_when_one_parameter_is_left(
    app: Caraway, published: list[Outgoing], stored: str
) -> None:
    @app.task(name="proj.fail")
    def fail() -> None:
        raise ValueError("linkerr")

    @app.task(name="proj.on_error_labelled")
    def on_error_labelled(task_id: str, label: str) -> str:
        return label

    errback = on_error_labelled.s("kept") if stored == "args" else on_error_labelled.s(label="kept")
    failed = fail.apply_async(link_error=errback)
    _run_as_worker(app, published[0])

    sent = parse_task_message(published[1].message, JSON)
    assert [sent.args, sent.kwargs] == (
        [[failed.id, "kept"], {}] if stored == "args" else [[failed.id], {"label": "kept"}]
    )


def test_ensure_chords_allowed_refuses_only_backends_that_cannot_join() -> None:
    Caraway("c", broker="memory://", backend="memory://").backend.ensure_chords_allowed()
    disabled = Caraway("c", broker="redis://127.0.0.1:1/0").backend
    with pytest.raises(NotImplementedError, match="does not support chords"):
        disabled.ensure_chords_allowed()


def test_partial_args_and_kwargs_can_be_assigned(add: Task[Any, Any]) -> None:
    sig = add.s(1)
    sig.args = (5,)
    sig.kwargs = {"y": 2}
    assert (sig["args"], sig["kwargs"]) == ([5], {"y": 2})
    assert sig.apply().get() == 7


def test_freezing_a_chain_gives_it_the_id_of_its_last_task(add: Task[Any, Any]) -> None:
    last = add.s(2).set(task_id="42")
    flow = add.s(4) | last
    assert flow.id is None
    assert flow.freeze(last.id).id == "42"
    assert flow.id == "42"


def test_a_task_itself_is_a_workflow_member_without_arguments(add: Task[Any, Any]) -> None:
    assert group(add, add.s(1, 1)).tasks[0] == add.s()
    assert chord([add, add], add.s(1)).tasks == [add.s(), add.s()]


def test_a_chord_copies_the_header_tasks_it_is_given(add: Task[Any, Any]) -> None:
    header = (add.si(1, 1), add.si(2, 2))
    errback = add.si(0, 0)

    built = chord(header, add.s())
    for task in built.tasks:
        task.link_error(errback)

    assert all(task.options["link_error"] == [errback] for task in built.tasks)
    assert header == (add.si(1, 1), add.si(2, 2)), "the caller's signatures are untouched (Celery)"


def test_a_generator_chord_header_is_sent_through_its_bodys_app(app: Caraway) -> None:
    """A generator header names no app until it is read: the chord takes its body's, as
    Celery does, not the current app (which here is another one)."""

    @app.task(name="gen.add")
    def add(x: int) -> int:
        return x

    @app.task(name="gen.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    chord(add.s(i) for i in range(3))(tsum.s())

    assert app.broker.size("celery") == 3
