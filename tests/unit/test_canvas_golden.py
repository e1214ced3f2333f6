"""Groups and chords against Celery 5.7's captured sends (``redis_messages.json``), and
canvas behaviour that needs no worker: eager runs, dicts, results, joins by counting.

Ids differ on every send, so both sides are compared with every UUID replaced by a token
numbered in order of first appearance: the same id in the same places on both sides.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway, GroupResult, Signature, chain, chord, group, signature
from caraway.engines.base.broker import Delivery, Outgoing
from caraway.exceptions import ChordError
from caraway.protocol import parse_task_message
from caraway.serialization import json_dumps, json_loads
from caraway.task import Task

JSON = frozenset({"application/json"})
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VOLATILE = {"origin"}


@pytest.fixture
def add(app: Caraway) -> Task[Any, Any]:
    @app.task(name="capapp.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


@pytest.fixture
def tsum(app: Caraway) -> Task[Any, Any]:
    @app.task(name="capapp.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    return tsum


def _tokenized(messages: list[tuple[dict[str, Any], Any]]) -> str:
    seen: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0), f"<id{len(seen)}>")

    return UUID.sub(token, json.dumps(messages))


def _captured(captures_dir: Path, variant: str) -> list[tuple[dict[str, Any], Any]]:
    data = json.loads((captures_dir / "redis_messages.json").read_text())[variant]
    envelopes = data["keys"]["celery"]["messages"]
    pushed = list(reversed(envelopes))  # LPUSH: the list's head is the last one sent
    return [
        ({k: v for k, v in e["headers"].items() if k not in VOLATILE},
         json.loads(base64.b64decode(e["body"])))
        for e in pushed
    ]  # fmt: skip


def _ours(published: list[Outgoing], drop_chord_size: bool = False) -> list[tuple[Any, Any]]:
    sent = []
    for outgoing in published:
        headers = {k: v for k, v in outgoing.message.headers.items() if k not in VOLATILE}
        body = json.loads(outgoing.message.body)
        if drop_chord_size and body[2]["chord"]:
            body[2]["chord"].pop("chord_size")
        sent.append((headers, body))
    return sent


def _reply_to_as_captured(ours: str, app: Caraway, captures_dir: Path, variant: str) -> str:
    data = json.loads((captures_dir / "redis_messages.json").read_text())[variant]
    theirs = data["keys"]["celery"]["messages"][0]["properties"]["reply_to"]
    return ours.replace(app.oid, theirs)


def test_group_messages_match_celerys(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing], captures_dir: Path
) -> None:
    result = group(add.s(1, 1), add.s(2, 2)).apply_async()

    assert _tokenized(_ours(published)) == _tokenized(_captured(captures_dir, "group"))
    assert [o.message.headers["group"] for o in published] == [result.id, result.id]


def test_chord_messages_match_celerys(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing],
    captures_dir: Path,
) -> None:  # fmt: skip
    result = chord([add.s(1, 1), add.s(2, 2)], tsum.s())()

    ours = _tokenized(_ours(published, drop_chord_size=True))
    ours = _reply_to_as_captured(ours, app, captures_dir, "chord")
    assert ours == _reply_to_as_captured(
        _tokenized(_captured(captures_dir, "chord")), app, captures_dir, "chord"
    )
    body = json.loads(published[0].message.body)[2]["chord"]
    assert body["options"]["task_id"] == result.id
    assert body["chord_size"] == 2, "a counting backend other than Redis carries the size"


def test_chain_holding_a_group_and_a_task_matches_celerys(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing],
    captures_dir: Path,
) -> None:  # fmt: skip
    chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).apply_async()

    assert _tokenized(_ours(published)) == _tokenized(
        _captured(captures_dir, "chain_with_group_and_chord")
    )


def test_group_and_chord_dicts_match_celerys(
    add: Task[Any, Any], tsum: Task[Any, Any], captures_dir: Path
) -> None:
    captured = json.loads((captures_dir / "redis_messages.json").read_text())["_signature_dicts"]

    ours = {
        "group": group(add.s(1, 1), add.s(2, 2)),
        "chord": chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
    }

    for name, sig in ours.items():
        assert json.loads(json_dumps(sig)) == captured[name], name
        back = signature(json_loads(json_dumps(sig)))
        assert type(back) is type(sig)
        assert json.loads(json_dumps(back)) == captured[name]


# --- running as a worker would, in this process ------------------------------------------------


def _drain(app: Caraway, published: list[Outgoing], limit: int = 100) -> None:
    """Run every published message (and what they publish) through the worker's code."""
    from caraway.execution import execute
    from caraway.worker.job import Job

    done = 0
    while done < len(published):
        outgoing = published[done]
        done += 1
        call = parse_task_message(outgoing.message, JSON)
        task = app.tasks[call.name]
        execute(
            task, Job(Delivery(outgoing.message, outgoing.queue, None), call, task, "w").request
        )
        assert done < limit


def test_a_redelivered_header_task_is_counted_once(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing]
) -> None:
    result = chord([add.s(1, 1), add.s(2, 2), add.s(3, 3)], tsum.s())()
    header = list(published)
    twice = [header[0], header[0], header[1], header[1], header[2]]
    published[:] = twice

    _drain(app, published)

    assert result.get(timeout=1) == 12
    bodies = [o for o in published if o.message.headers["task"] == "capapp.tsum"]
    assert len(bodies) == 1, "the body is sent once"


def test_the_first_failing_header_task_fails_the_body_at_once(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing]
) -> None:
    @app.task(name="capapp.fail")
    def fail() -> None:
        raise ValueError("header-broke")

    result = chord([fail.si(), add.s(1, 1)], tsum.s())()
    failing = published[0]
    published[:] = [failing]

    _drain(app, published)

    meta = app.backend.get_task_meta(result.id)
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "ChordError"
    assert meta["result"]["exc_message"] == [
        f"Dependency {failing.message.headers['id']} raised ValueError('header-broke')"
    ]
    with pytest.raises(ChordError):
        app.AsyncResult(result.id).get(timeout=1)


def test_eager_group_chord_and_chain(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    assert group(add.s(i, i) for i in range(3)).apply().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply().get() == 6
    app.conf.task_always_eager = True
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).delay().get() == 7
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s()).delay().get() == 6


def test_pipes_build_the_celery_shapes(add: Task[Any, Any], tsum: Task[Any, Any]) -> None:
    header = group(add.s(1, 1), add.s(2, 2))

    assert isinstance(header | tsum.s(), chord)
    assert isinstance(add.s(1, 1) | header, chain)
    as_chain = (header | tsum.s()) | add.s(1)
    assert isinstance(as_chain, chord)
    assert isinstance(as_chain.body, chain)
    assert isinstance(Signature.from_dict(json_loads(json_dumps(as_chain))), chord)


def test_group_result_tuple_saves_and_restores(app: Caraway, add: Task[Any, Any]) -> None:
    result = group(add.s(1, 1), add.s(2, 2)).apply_async()

    result.save()
    stored = app.backend.restore_group(str(result.id))
    restored = GroupResult.restore(str(result.id), app=app)

    assert stored == [[result.id, None], [[[r.id, None], None] for r in result.results]]
    assert restored is not None
    assert restored.id == result.id
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    restored.delete()
    assert GroupResult.restore(str(result.id), app=app) is None


def test_chord_on_rpc_is_refused_with_a_clear_error() -> None:
    from caraway.exceptions import ImproperlyConfigured

    app = Caraway("rpc", broker="amqp://guest@127.0.0.1:1//", backend="rpc://",
                  set_as_current=False)  # fmt: skip

    @app.task(name="capapp.add")
    def add(x: int, y: int) -> int:
        return x + y

    try:
        with pytest.raises(ImproperlyConfigured, match="cannot join chords"):
            chord([add.s(1, 1)], add.s(1)).apply_async()
    finally:
        app.close()


def test_a_big_group_is_published_in_a_few_pipelined_batches(
    app: Caraway, add: Task[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    publish = app.broker.publish

    def record(batch: Any) -> None:
        batches.append(len(batch))
        publish(batch)

    monkeypatch.setattr(app.broker, "publish", record)

    result = group(add.s(i, i) for i in range(2500)).apply_async()

    assert batches == [1000, 1000, 500]
    assert app.broker.size("celery") == 2500
    assert len(result.results) == 2500


def test_completed_count_reads_one_counter_not_every_result(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = group(add.s(i, i) for i in range(20)).apply_async()
    published[:] = published[:15]
    _drain(app, published)

    def no_reads(task_id: str) -> Any:
        raise AssertionError("completed_count() read a member's result")

    monkeypatch.setattr(app.backend, "get_task_meta", no_reads)
    assert result.completed_count() == 15


def test_chord_link_error_reaches_header_tasks_only_when_allowed(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any]
) -> None:
    errback = add.si(0, 0)

    plain = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    plain.link_error(errback)
    app.conf.task_allow_error_cb_on_chord_header = True
    allowed = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    allowed.link_error(errback)

    assert [t.options.get("link_error") for t in plain.tasks] == [None, None]
    assert plain.body.options["link_error"] == [errback]
    assert [t.options["link_error"] for t in allowed.tasks] == [[errback], [errback]]
    assert allowed.body.options["link_error"] == [errback]


def test_chord_unlock_joins_a_chord_sent_without_a_size(
    app: Caraway, add: Task[Any, Any], tsum: Task[Any, Any], published: list[Outgoing]
) -> None:
    """A Celery client on a backend Celery cannot count on (SQL) sends ``chord_unlock``."""
    body = tsum.s()
    body.freeze()
    header = group(add.s(1, 1), add.s(2, 2)).apply_async(task_id="g1", chord=body)
    app.tasks["celery.chord_unlock"].apply_async(
        ("g1", dict(body)), {"result": [r.as_tuple() for r in header.results]}
    )

    _drain(app, published)

    assert app.AsyncResult(str(body.id)).get(timeout=1) == 6
    bodies = [o for o in published if o.message.headers["task"] == "capapp.tsum"]
    assert len(bodies) == 1, "the header tasks did not also send it"


def test_chord_unlock_gives_up_after_bounded_retries_with_a_clear_error(
    app: Caraway, tsum: Task[Any, Any], published: list[Outgoing]
) -> None:
    body = tsum.s()
    body.freeze()
    never = [[["never-ran", None], None]]
    app.tasks["celery.chord_unlock"].apply_async(
        ("g2", dict(body)), {"result": never, "interval": 0, "max_retries": 2}
    )

    _drain(app, published)

    unlocks = [o for o in published if o.message.headers["task"] == "celery.chord_unlock"]
    assert len(unlocks) == 3
    with pytest.raises(ChordError, match="gave up on chord g2 after 2 checks"):
        app.AsyncResult(str(body.id)).get(timeout=1)


def test_a_chains_task_id_is_its_last_steps(
    app: Caraway, add: Task[Any, Any], published: list[Outgoing]
) -> None:
    result = chain(add.s(1, 1), add.s(2)).apply_async(task_id="the-chain")

    assert result.id == "the-chain"
    _drain(app, published)
    assert app.AsyncResult("the-chain").get(timeout=1) == 4
