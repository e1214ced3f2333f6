"""The prefork child pipe's framing: whole messages in order, whatever the reads deliver."""

from __future__ import annotations

import threading
from multiprocessing import Pipe

import pytest

from caraway.worker.pools.channel import READ_SIZE, Channel
from caraway.worker.pools.child import Reply


def _pair() -> tuple[Channel, Channel]:
    left, right = Pipe()
    return Channel(left), Channel(right)


def test_messages_sent_together_arrive_one_by_one_in_order() -> None:
    supervisor, child = _pair()
    supervisor.send(("bench.incr", {"id": "a", "args": [1]}))
    supervisor.send(None)
    assert child.recv() == ("bench.incr", {"id": "a", "args": [1]})
    assert child.poll(0)  # the second one is already in the buffer
    assert child.recv() is None
    assert not child.poll(0.01)


def test_a_message_larger_than_one_read_arrives_whole() -> None:
    supervisor, child = _pair()
    big = {"payload": b"x" * (READ_SIZE * 5 + 17)}
    writer = threading.Thread(target=supervisor.send, args=(big,))  # blocks until read
    writer.start()
    assert child.recv() == big
    writer.join(5)


def test_a_reply_keeps_every_field() -> None:
    supervisor, child = _pair()
    reply = Reply("FAILURE", ValueError("no"), ("why", True), True, "Traceback ...")
    child.send(reply)
    got = supervisor.recv()
    assert (got.state, got.reject, got.retiring, got.traceback, got.internal) == (
        "FAILURE", ("why", True), True, "Traceback ...", None,
    )  # fmt: skip
    assert isinstance(got.retval, ValueError)
    assert got.retval.args == ("no",)


def test_a_closed_end_is_eof_and_a_write_to_it_fails() -> None:
    supervisor, child = _pair()
    child.close()
    assert supervisor.poll(0)  # readable: the end of the pipe
    with pytest.raises(EOFError):
        supervisor.recv()
    with pytest.raises(BrokenPipeError):
        supervisor.send(None)
