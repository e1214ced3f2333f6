"""Stamping: what a visitor puts on each task of a canvas, and the headers each message carries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from caraway import Caraway, chain, chord, group
from caraway.canvas import Signature, StampingVisitor
from caraway.engines.base.broker import Outgoing
from caraway.protocol import parse_task_message
from caraway.serialization import json_dumps
from caraway.task import Task

JSON = frozenset({"application/json"})


class FortyTwo(StampingVisitor):
    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        return {"stamp": 42}


class Recorder(StampingVisitor):
    """Stamps each node with its kind and remembers the order it was asked in."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _seen(self, hook: str, sig: Signature) -> None:
        self.calls.append(f"{hook}:{sig.task.rsplit('.', 1)[-1]}")

    def on_signature(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("signature", sig)
        return {"leaf": sig.task}

    def on_group_start(self, group: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("group_start", group)
        return {"in_group": True}

    def on_group_end(self, group: Signature, **headers: Any) -> None:
        self._seen("group_end", group)

    def on_chain_start(self, chain: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("chain_start", chain)
        return {}

    def on_chain_end(self, chain: Signature, **headers: Any) -> None:
        self._seen("chain_end", chain)

    def on_chord_body(self, sig: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("chord_body", sig)
        return {"body": True}

    def on_callback(self, callback: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("callback", callback)
        return {"link": "ok"}

    def on_errback(self, errback: Signature, **headers: Any) -> dict[str, Any]:
        self._seen("errback", errback)
        return {"link": "error"}


@pytest.fixture
def add(app: Caraway) -> Task[Any, Any]:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


@pytest.fixture
def tsum(app: Caraway) -> Task[Any, Any]:
    @app.task(name="proj.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    return tsum


def _stamps(sig: Signature) -> dict[str, Any]:
    names = sig.options.get("stamped_headers") or []
    return {"stamped_headers": sorted(names), **{name: sig.options[name] for name in names}}


def _headers(outgoing: Outgoing) -> dict[str, Any]:
    return outgoing.message.headers


def _embed(outgoing: Outgoing) -> dict[str, Any]:
    embed: dict[str, Any] = json.loads(json_dumps(parse_task_message(outgoing.message, JSON).embed))
    return embed


def test_a_visitor_needs_on_signature() -> None:
    class Nothing(StampingVisitor):
        pass

    with pytest.raises(TypeError, match="on_signature"):
        Nothing()  # type: ignore[abstract]


def test_every_task_of_a_canvas_and_its_links_is_stamped(
    add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    canvas = group(add.s(1, 2) | add.s(3), add.si(4, 5)) | tsum.s()
    canvas.link(add.si(0, 0))
    canvas.link_error(add.si(9, 9))

    canvas.stamp(FortyTwo())

    body = canvas.body
    tasks = [*canvas.tasks[0].tasks, canvas.tasks[1], body, *body.options["link"],
             *body.options["link_error"]]  # fmt: skip
    assert [_stamps(t) for t in tasks] == [{"stamped_headers": ["stamp"], "stamp": 42}] * 6
    # The composites themselves carry no stamps: only the tasks they send do.
    assert "stamped_headers" not in canvas.options
    assert "stamped_headers" not in canvas.tasks[0].options


def test_the_visitor_is_asked_at_each_node_in_order(
    add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    visitor = Recorder()
    first = add.s(1, 1)
    first.link(tsum.s())
    first.link_error(tsum.si([0]))
    canvas = chain(first, chord([add.s(2), add.s(3)], tsum.s()))

    canvas.stamp(visitor)

    assert visitor.calls == [
        "chain_start:chain",
        "callback:tsum", "signature:tsum", "errback:tsum", "signature:tsum", "signature:add",
        "group_start:group", "signature:add", "signature:add", "group_end:group",
        "chord_body:chord", "signature:tsum",
        "chain_end:chain",
    ]  # fmt: skip
    header = canvas.tasks[1].tasks
    assert {k: header[0].options[k] for k in ("in_group", "leaf")} == {
        "in_group": True, "leaf": "proj.add",
    }  # fmt: skip
    body = canvas.tasks[1].body
    assert _stamps(body) == {
        "stamped_headers": ["body", "in_group", "leaf"], "body": True, "in_group": True,
        "leaf": "proj.tsum",
    }  # fmt: skip
    # A link gets what on_callback/on_errback say and its own on_signature, not its task's.
    assert _stamps(first.options["link"][0]) == {
        "stamped_headers": ["leaf", "link"], "leaf": "proj.tsum", "link": "ok",
    }  # fmt: skip
    assert first.options["link_error"][0].options["link"] == "error"


def test_keyword_stamps_and_append_stamps(add: Task[Any, Any]) -> None:
    sig = add.si(1, 1)

    sig.stamp(FortyTwo(), tenant="a")
    assert _stamps(sig) == {"stamped_headers": ["stamp", "tenant"], "stamp": 42, "tenant": "a"}

    sig.stamp(tenant="b")  # a new value replaces the old one
    assert sig.options["tenant"] == "b"

    sig.stamp(append_stamps=True, tenant="c")  # or joins it, newest first (as Celery)
    assert sig.options["tenant"] == ["c", "b"]
    assert sig.options["stamp"] == 42


def test_a_link_kept_as_a_dict_is_stamped_in_place(add: Task[Any, Any]) -> None:
    sig = add.si(1, 1)
    sig.options["link"] = dict(add.si(2, 2))

    sig.stamp(FortyTwo())

    assert _stamps(sig.options["link"]) == {"stamped_headers": ["stamp"], "stamp": 42}


def test_stamps_travel_in_celerys_headers_not_in_properties(
    add: Task[Any, Any], published: list[Outgoing]
) -> None:
    sig = add.si(1, 1)
    sig.link(add.si(2, 2))
    sig.stamp(FortyTwo())

    sig.apply_async()

    (sent,) = published
    headers = _headers(sent)
    assert headers["stamped_headers"] == ["stamp"]
    assert headers["stamps"] == {"stamp": 42}
    assert "stamp" not in headers
    assert "stamp" not in sent.message.properties
    (callback,) = _embed(sent)["callbacks"]
    assert callback["options"]["stamped_headers"] == ["stamp"]
    assert callback["options"]["stamp"] == 42


def test_a_list_stamp_stays_a_list_and_calling_options_do_not_override_stamps(
    add: Task[Any, Any], published: list[Outgoing]
) -> None:
    sig = add.si(1, 1).stamp(ids=[4, 2])

    sig.apply_async(ids="other", countdown=0)

    assert _headers(published[0])["stamps"] == {"ids": [4, 2]}


def test_a_stamped_chord_sends_stamped_members(
    add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing]
) -> None:
    canvas = chord([add.si(1, 1), add.si(2, 2)], tsum.s())
    canvas.stamp(FortyTwo(), run="r1")

    canvas.apply_async()

    assert [_headers(o)["stamps"] for o in published] == [{"stamp": 42, "run": "r1"}] * 2
    body = _embed(published[0])["chord"]
    assert {k: body["options"][k] for k in ("stamp", "run")} == {"stamp": 42, "run": "r1"}
