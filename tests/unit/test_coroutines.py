"""Interrupting an ``async def`` body: soft limits raise at its await, hard ones cancel it."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings

import pytest

from caraway.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from caraway.execution import coroutines


def test_soft_limit_is_raised_at_the_await_and_the_body_goes_on() -> None:
    cleaned: list[str] = []

    async def body() -> str:
        try:
            await asyncio.sleep(10)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0)  # the task is not left cancelled: it can await again
            cleaned.append("yes")
            return "cleaned up"
        return "never"

    async def main() -> str:
        owner = object()
        asyncio.get_running_loop().call_later(
            0.05, coroutines.interrupt, owner, SoftTimeLimitExceeded
        )
        return str(await coroutines.await_interruptibly(owner, body()))

    assert asyncio.run(main()) == "cleaned up"
    assert cleaned == ["yes"]


def test_hard_limit_unwinds_the_body_and_raises_time_limit_exceeded() -> None:
    unwound: list[bool] = []

    async def body() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            unwound.append(True)

    async def main() -> None:
        owner = object()
        asyncio.get_running_loop().call_later(0.05, coroutines.interrupt, owner, TimeLimitExceeded)
        await coroutines.await_interruptibly(owner, body())

    with pytest.raises(TimeLimitExceeded):
        asyncio.run(main())
    assert unwound == [True]


def test_interrupting_nothing_says_so() -> None:
    assert coroutines.interrupt(object(), SoftTimeLimitExceeded) is False


def test_thread_loop_is_kept_per_thread() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    def run_twice() -> None:
        loops.append(coroutines.thread_loop())
        loops.append(coroutines.thread_loop())

    thread = threading.Thread(target=run_twice)
    thread.start()
    thread.join()

    assert loops[0] is loops[1]
    assert loops[0] is not coroutines.thread_loop()


def test_a_forked_child_gets_its_own_loop() -> None:
    parents = coroutines.thread_loop()
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns when other test threads are alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report whether it was handed the parent's loop
        os.write(write, b"same" if coroutines.thread_loop() is parents else b"new")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 8)
    os.close(read)
    os.waitpid(pid, 0)

    assert answer == b"new"
