"""States and their precedence; signals: connecting, sender filtering, robustness, task signals."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from caraway import Caraway, signals, states
from caraway.signals import Signal
from caraway.task import Task

# --- states -------------------------------------------------------------------------------


def test_precedence_order_is_celerys() -> None:
    ordered = [
        states.SUCCESS, states.FAILURE, "PROGRESS", states.REVOKED, states.STARTED,
        states.RECEIVED, states.REJECTED, states.RETRY, states.PENDING,
    ]  # fmt: skip

    ranks = [states.precedence(name) for name in ordered]

    assert ranks == sorted(ranks)
    assert len(set(ranks)) == len(ranks)


@pytest.mark.parametrize(
    ("stronger", "weaker"),
    [
        (states.SUCCESS, states.PENDING),
        (states.SUCCESS, states.FAILURE),
        (states.FAILURE, states.REVOKED),
        (states.STARTED, states.RECEIVED),
        (states.RETRY, states.PENDING),
        ("PROGRESS", states.STARTED),
        ("PROGRESS", states.REVOKED),
        (states.FAILURE, "PROGRESS"),
    ],
)
def test_state_compares_by_precedence(stronger: str, weaker: str) -> None:
    assert states.state(stronger) > states.state(weaker)
    assert states.state(stronger) >= states.state(weaker)
    assert states.state(weaker) < states.state(stronger)
    assert states.state(weaker) <= states.state(stronger)
    assert not states.state(weaker) > states.state(stronger)


def test_custom_states_share_one_rank() -> None:
    assert states.precedence("PROGRESS") == states.precedence("UPLOADING")
    assert states.state("PROGRESS") >= states.state("UPLOADING")
    assert states.state("PROGRESS") <= states.state("UPLOADING")


def test_state_is_still_a_string() -> None:
    value = states.state(states.SUCCESS)

    assert value == "SUCCESS"
    assert {value: 1}["SUCCESS"] == 1


def test_state_sets() -> None:
    assert frozenset({"SUCCESS", "FAILURE", "REVOKED"}) == states.READY_STATES
    assert frozenset({"PENDING", "RECEIVED", "STARTED", "REJECTED", "RETRY"}) == (
        states.UNREADY_STATES
    )
    assert frozenset({"RETRY", "FAILURE", "REVOKED"}) == states.EXCEPTION_STATES
    assert frozenset({"FAILURE", "REVOKED"}) == states.PROPAGATE_STATES
    assert not states.READY_STATES & states.UNREADY_STATES
    everything_but_rejected = states.READY_STATES | (states.UNREADY_STATES - {states.REJECTED})
    assert everything_but_rejected == states.ALL_STATES


# --- signals: the mechanism ---------------------------------------------------------------


def test_send_calls_receivers_in_order_with_signal_and_sender() -> None:
    signal = Signal("test")
    calls: list[Any] = []

    def first(sender: Any, **kwargs: Any) -> str:
        calls.append(("first", sender, kwargs))
        return "one"

    def second(sender: Any, **kwargs: Any) -> str:
        calls.append(("second", sender, kwargs["value"]))
        return "two"

    signal.connect(first)
    signal.connect(second)

    responses = signal.send(sender="me", value=1)

    assert responses == [(first, "one"), (second, "two")]
    assert calls[0] == ("first", "me", {"signal": signal, "value": 1})
    assert calls[1] == ("second", "me", 1)


def test_decorator_forms_and_dispatch_uid_dedupe() -> None:
    signal = Signal("test")
    calls: list[str] = []

    @signal.connect
    def plain(**kwargs: Any) -> None:
        calls.append("plain")

    @signal.connect(sender="only-me")
    def filtered(**kwargs: Any) -> None:
        calls.append("filtered")

    signal.connect(plain)  # the same receiver again: no duplicate
    signal.connect(lambda **kw: calls.append("uid"), dispatch_uid="x")
    signal.connect(lambda **kw: calls.append("uid-again"), dispatch_uid="x")

    signal.send(sender="someone")
    signal.send(sender="only-me")

    assert calls == ["plain", "uid", "plain", "filtered", "uid"]


def test_sender_filter_matches_the_object_or_its_name() -> None:
    signal = Signal("test")
    hits: list[str] = []

    class Sender:
        name = "proj.add"

    sender, other = Sender(), Sender()
    other.name = "proj.other"
    signal.connect(lambda **kw: hits.append("by-object"), sender=sender)
    signal.connect(lambda **kw: hits.append("by-name"), sender="proj.add")

    signal.send(sender=sender)
    signal.send(sender=other)
    signal.send(sender=None)

    assert hits == ["by-object", "by-name"]


def test_a_raising_receiver_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signal = Signal("test")
    calls: list[str] = []
    error = RuntimeError("receiver broke")

    def broken(**kwargs: Any) -> None:
        raise error

    signal.connect(broken)
    signal.connect(lambda **kw: calls.append("after"))

    with caplog.at_level(logging.ERROR, logger="caraway.signals"):
        responses = signal.send(sender=None)

    assert calls == ["after"]
    assert responses[0] == (broken, error)
    assert "receiver broke" in caplog.text


def test_disconnect() -> None:
    signal = Signal("test")
    calls: list[str] = []

    def receiver(**kwargs: Any) -> None:
        calls.append("x")

    signal.connect(receiver, sender="s")
    assert signal.disconnect(receiver) is False, "the sender is part of the key"
    assert signal.disconnect(receiver, sender="s") is True
    signal.connect(lambda **kw: calls.append("uid"), dispatch_uid="u")
    assert signal.disconnect(dispatch_uid="u") is True
    with pytest.raises(TypeError):
        signal.disconnect()

    signal.send(sender="s")

    assert calls == []
    assert signal.receivers == []


def test_weak_receivers_go_away_with_their_owner() -> None:
    signal = Signal("test")
    calls: list[str] = []

    class Owner:
        def handle(self, **kwargs: Any) -> None:
            calls.append("method")

    owner = Owner()
    signal.connect(owner.handle, weak=True)
    signal.send(sender=None)
    del owner
    gc.collect()
    signal.send(sender=None)

    assert calls == ["method"]
    assert signal.receivers == []


def test_strong_receiver_is_kept_by_default() -> None:
    signal = Signal("test")
    calls: list[str] = []

    def make() -> None:
        @signal.connect
        def inner(**kwargs: Any) -> None:
            calls.append("inner")

    make()
    gc.collect()
    signal.send(sender=None)

    assert calls == ["inner"]


# --- signals sent by caraway --------------------------------------------------------------


@pytest.fixture
def record() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Connect a recorder to the task and publish signals; disconnect afterwards."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name in (
        "before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
        "task_success", "task_failure", "task_retry",
    ):  # fmt: skip
        signal = getattr(signals, name)

        def receiver(sender: Any = None, _name: str = name, **kwargs: Any) -> None:
            seen.append((_name, {"sender": sender, **kwargs}))

        signal.connect(receiver)
        receivers.append((signal, receiver))
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_publish_signals_carry_the_message(
    app: Caraway, record: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(1, 2)

    assert [name for name, _ in record] == ["before_task_publish", "after_task_publish"]
    before = record[0][1]
    assert before["sender"] == "proj.add"
    assert before["headers"]["id"] == result.id
    assert before["routing_key"] == "celery"
    assert before["exchange"] == ""
    assert before["properties"]["correlation_id"] == result.id
    assert list(before["body"][0]) == [1, 2]
    assert record[1][1]["headers"]["id"] == result.id


def test_task_signals_around_a_successful_run(
    app: Caraway, record: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.apply((1, 2), task_id="t-1")

    assert [name for name, _ in record] == ["task_prerun", "task_success", "task_postrun"]
    prerun, success, postrun = (fields for _, fields in record)
    assert prerun["sender"] is add
    assert (prerun["task_id"], prerun["task"], prerun["args"]) == ("t-1", add, [1, 2])
    assert success["result"] == 3
    assert (postrun["retval"], postrun["state"]) == (3, states.SUCCESS)


def test_task_signals_on_failure_and_retry(
    app: Caraway, record: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task(name="proj.flaky", bind=True, max_retries=1)
    def flaky(self: Task[Any, Any]) -> None:
        raise self.retry(exc=KeyError("again"), countdown=0)

    flaky.apply()

    names = [name for name, _ in record]
    assert names == [
        "task_prerun", "task_retry", "task_postrun",
        "task_prerun", "task_failure", "task_postrun",
    ]  # fmt: skip
    retry = record[1][1]
    assert isinstance(retry["reason"], KeyError)
    failure = record[4][1]
    assert isinstance(failure["exception"], KeyError)
    assert "KeyError" in failure["einfo"].traceback


def test_a_raising_task_signal_receiver_does_not_break_the_task(app: Caraway) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    signals.task_prerun.connect(broken, sender=add)
    try:
        result = add.apply((1, 2))
    finally:
        signals.task_prerun.disconnect(broken, sender=add)

    assert result.get() == 3


def test_task_signal_sender_filter_by_task(app: Caraway) -> None:
    @app.task(name="proj.one")
    def one() -> int:
        return 1

    @app.task(name="proj.two")
    def two() -> int:
        return 2

    seen: list[Any] = []

    def receiver(sender: Any = None, **kwargs: Any) -> None:
        seen.append(kwargs["result"])

    signals.task_success.connect(receiver, sender=two)
    try:
        one.apply()
        two.apply()
    finally:
        signals.task_success.disconnect(receiver, sender=two)

    assert seen == [2]
