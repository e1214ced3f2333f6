"""Hand-written hot-path helpers agree with what they replace: ``uuid4`` and redis-py's packer."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import pytest
from redis.connection import Connection

from caraway.engines.redis.client import pack
from caraway.utils.ids import new_id


def test_new_ids_are_random_version_4_uuids_in_canonical_form() -> None:
    ids = [new_id() for _ in range(2000)]
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert len(set(ids)) == len(ids)


def test_a_forked_child_and_its_parent_draw_different_ids() -> None:
    new_id()  # the parent's buffer holds unread random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent, then out without cleanup
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    assert uuid.UUID(child).version == 4
    assert child != new_id()


def test_threads_draw_different_ids() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda out=out: out.extend(new_id() for _ in range(500)))
        for out in drawn
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    every = [text for out in drawn for text in out]
    assert len(every) == len(set(every)) == 2000


@pytest.mark.parametrize(
    "commands",
    [
        [("PING",)],
        [("HDEL", "unacked", "a-b", "c")],
        [("LPUSH", b"k\x00ey", b"\xff" * 3, "é"), ("EXPIRE", "k", 10)],
        [("BRPOP", "q1", "q2", 0.25), ("EVALSHA", "abc", 2, "k1", "k2", -1, 1.5e-07)],
        [("SET", "big", b"x" * 100_000)],
    ],
)
def test_resp_packing_matches_redis_py(commands: list[tuple[Any, ...]]) -> None:
    expected = b"".join(Connection().pack_commands(commands))  # type: ignore[no-untyped-call]
    assert pack(commands) == expected


def test_packing_refuses_what_redis_cannot_store() -> None:
    with pytest.raises(TypeError, match="cannot send dict to Redis"):
        pack([("SET", "k", {"a": 1})])
