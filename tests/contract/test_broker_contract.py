"""What every broker engine must do, checked on each one against its real server."""

from __future__ import annotations

import time
import uuid

from caraway.engines.base.broker import Broker, Outgoing, QueueStats
from caraway.protocol import Message, build_task_message


def _message(name: str = "contract.task", priority: int = 0) -> Message:
    return build_task_message(name, str(uuid.uuid4()), (1, 2), {}, priority=priority)


def _queue() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


def _fetch_all(broker: Broker, queue: str, expected: int, timeout: float = 5.0) -> list:
    found: list = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        found.extend(broker.fetch([queue], expected - len(found), 0.2))
    return found


def test_published_messages_come_back_intact_and_in_order(broker: Broker) -> None:
    queue = _queue()
    sent = [_message() for _ in range(5)]
    broker.publish([Outgoing(m, queue) for m in sent])

    got = _fetch_all(broker, queue, 5)

    ids, sent_ids = [d.message.task_id for d in got], [m.task_id for m in sent]
    assert ids == sent_ids if broker.capabilities.fifo else sorted(ids) == sorted(sent_ids)
    first = next(d.message for d in got if d.message.task_id == sent[0].task_id)
    assert first.headers == sent[0].headers
    assert first.body == sent[0].body
    assert (first.content_type, first.content_encoding) == ("application/json", "utf-8")
    assert all(d.queue == queue and not d.redelivered for d in got)
    broker.ack([d.tag for d in got])
    assert broker.size(queue) == 0


def test_fetch_waits_at_most_the_timeout_on_an_empty_queue(broker: Broker) -> None:
    started = time.monotonic()
    assert broker.fetch([_queue()], 10, 0.3) == []
    assert 0.2 <= time.monotonic() - started < 2.0


def test_fetch_takes_at_most_the_limit(broker: Broker) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue) for _ in range(7)])
    first = broker.fetch([queue], 3, 1.0)
    assert len(first) <= 3
    rest = _fetch_all(broker, queue, 7 - len(first))
    assert len(first) + len(rest) == 7
    broker.ack([d.tag for d in [*first, *rest]])


def test_released_messages_are_delivered_again(broker: Broker) -> None:
    queue = _queue()
    message = _message()
    broker.publish([Outgoing(message, queue)])
    (delivery,) = _fetch_all(broker, queue, 1)
    broker.release([delivery.tag])

    (again,) = _fetch_all(broker, queue, 1)

    assert again.message.task_id == message.task_id
    broker.ack([again.tag])
    assert broker.size(queue) == 0


def test_acked_messages_are_gone(broker: Broker) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue)])
    (delivery,) = _fetch_all(broker, queue, 1)
    broker.ack([delivery.tag])
    assert broker.fetch([queue], 1, 0.3) == []


def test_priority_order_follows_the_engine_convention(broker: Broker) -> None:
    queue = _queue()
    priorities = [0, 9, 5]
    broker.publish([Outgoing(_message(priority=p), queue, p) for p in priorities])
    time.sleep(0.05)  # let every message land before the first fetch

    got = _fetch_all(broker, queue, 3)

    order = [d.message.priority for d in got]
    convention = broker.capabilities.priority_order
    expected = sorted(priorities, reverse=convention == "high-first")
    assert (sorted(order) if convention == "ignored" else order) == expected
    broker.ack([d.tag for d in got])


def test_queue_stats_count_what_waits_and_say_why_a_figure_is_missing(broker: Broker) -> None:
    queue = _queue()
    first, second, urgent = _message(), _message(), _message(priority=9)
    broker.publish([Outgoing(first, queue), Outgoing(second, queue), Outgoing(urgent, queue, 9)])
    time.sleep(0.05)  # let every message land

    stats = broker.queue_stats(queue)

    assert isinstance(stats, QueueStats)
    assert stats.messages == broker.size(queue) == 3
    for figure in ("by_priority", "consumers", "oldest_age"):
        assert (getattr(stats, figure) is None) == (figure in stats.unknown), figure
    if stats.by_priority is not None:
        assert sum(stats.by_priority.values()) == 3
        assert len([n for n in stats.by_priority.values() if n]) == 2  # 0 and 9 kept apart
    if stats.oldest_age is not None:
        assert 0 <= stats.oldest_age < 60
    if stats.consumers is not None:
        assert stats.consumers == 0
    if stats.next_ids:
        assert first.task_id in stats.next_ids
        assert second.task_id not in stats.next_ids
    assert broker.fetch([queue], 1, 0.3) != []  # looking took nothing
    assert broker.queue_stats(_queue()).messages == 0


def test_delayed_messages_wait_when_the_broker_holds_them(broker: Broker) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue, deliver_at=time.time() + 1.0)])
    early = broker.fetch([queue], 1, 0.3)
    if broker.capabilities.native_delay:
        assert early == []
        early = _fetch_all(broker, queue, 1, timeout=5.0)
    assert len(early) == 1
    broker.ack([early[0].tag])


def test_dead_letters_keep_the_message_and_the_reason(broker: Broker) -> None:
    queue = _queue()
    message = _message()
    broker.publish([Outgoing(message, queue)])
    (delivery,) = _fetch_all(broker, queue, 1)

    where = broker.dead_letter(delivery, "cannot decode: test")

    assert where
    letters = [d for d in broker.dead_letters(1000) if d.message.task_id == message.task_id]
    assert len(letters) == 1
    assert letters[0].reason == "cannot decode: test"
    assert letters[0].queue == queue
    assert letters[0].message.body == message.body
    assert broker.fetch([queue], 1, 0.3) == []


def test_a_dead_letter_can_be_requeued_or_deleted_by_its_key(broker: Broker) -> None:
    queue = _queue()
    kept, dropped = _message(), _message()
    broker.publish([Outgoing(kept, queue), Outgoing(dropped, queue)])
    for delivery in _fetch_all(broker, queue, 2):
        broker.dead_letter(delivery, "test: set aside")
    mine = {d.message.task_id: d for d in broker.dead_letters(1000)}
    assert {kept.task_id, dropped.task_id} <= set(mine)

    assert broker.settle_dead_letter(mine[kept.task_id].key, requeue=True)
    assert broker.settle_dead_letter(mine[dropped.task_id].key, requeue=False)

    (again,) = _fetch_all(broker, queue, 1)
    assert again.message.task_id == kept.task_id
    assert again.message.body == kept.body
    broker.ack([again.tag])
    left = {d.message.task_id for d in broker.dead_letters(1000)}
    assert not left & {kept.task_id, dropped.task_id}
    assert not broker.settle_dead_letter(mine[kept.task_id].key, requeue=True)
    assert broker.fetch([queue], 1, 0.3) == []


def test_purge_deletes_waiting_messages(broker: Broker) -> None:
    queue = _queue()
    broker.publish([Outgoing(_message(), queue) for _ in range(4)])
    time.sleep(0.05)
    assert broker.size(queue) == 4
    assert broker.purge(queue) == 4
    assert broker.size(queue) == 0


def test_revocations_are_seen_from_a_cursor(broker: Broker) -> None:
    _, cursor = broker.revocations(0)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    broker.revoke([first], terminate=False)
    broker.revoke([second], terminate=True)

    seen, cursor = broker.revocations(cursor)

    assert seen[-2:] == [(first, False), (second, True)]
    assert broker.revocations(cursor) == ([], cursor)
