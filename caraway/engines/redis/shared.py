"""One connection that many threads' commands share: concurrent callers, one round trip.

A web server calling ``delay()`` from 16 threads would otherwise pay one Redis round trip
per call, each on its own connection. Here a caller that finds the connection busy queues
its packed commands and waits; the caller holding the connection (the *leader*) writes
every queued command in one write, reads the replies in order and hands each caller its
own, then passes the connection to the first caller that queued meanwhile. Every call
still returns only after Redis answered *its* commands; one thread alone pays no more
than a plain call (no hand-off, no wake-up).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection

from caraway.engines.redis.client import (
    CONNECTION_ERRORS,
    RETRIES,
    RETRY_BASE,
    RETRY_CAP,
    pack,
    read_replies,
)
from caraway.utils.pid import after_fork_in_child

#: Slack on top of the socket timeouts a waiting caller allows the round trips ahead of it.
WAIT_SLACK = 5.0


class _Call:
    """One caller's commands, and what came back for them."""

    __slots__ = ("count", "done", "error", "lead", "packed", "replies")

    def __init__(self, packed: bytes, count: int) -> None:
        self.packed = packed
        self.count = count
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None
        # Released when the call is answered or its caller is to lead (followers only).
        self.done: Any = None
        self.lead = False


class SharedLane:
    """Commands from any thread, pipelined on one kept connection.

    Failures behave as ``Lane.call``'s: a connection error disconnects and sends again
    (once, after the same backoff) what has not been answered, so a command whose reply
    the dropped connection took may run twice, never silently not at all; when the retry
    fails too, every caller still waiting gets the error. An error reply reaches only the
    caller whose command it answers. ``round_trips`` counts the writes.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        kwargs = getattr(self._pool, "connection_kwargs", {})
        per_try = float(kwargs.get("socket_timeout") or 30.0) + float(
            kwargs.get("socket_connect_timeout") or 30.0
        )
        # The batch in flight and ours, each with its retries: longer means a leader hangs.
        self.wait = 2 * (RETRIES + 1) * (per_try + RETRY_CAP) + WAIT_SLACK
        self.round_trips = 0
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        """Fresh state; in a forked child, the parent's connection and waiters are not ours."""
        self._mutex = threading.Lock()
        self._queue: list[_Call] = []
        self._leading = False
        self._conn: AbstractConnection | None = None

    def call(self, *commands: Sequence[Any]) -> list[Any]:
        """Send ``commands`` (in one write with whatever other threads send now); their
        replies. Raises the first error reply among them, or the connection error."""
        call = _Call(pack(commands), len(commands))
        with self._mutex:
            self._queue.append(call)
            follow = self._leading
            if follow:
                call.done = threading.Lock()
                call.done.acquire()
            else:
                self._leading = True
        if follow:
            try:
                self._wait(call)
            except BaseException:  # a timeout, or an interrupt while waiting
                self._abandon(call)
                raise
        if call.replies is None and call.error is None:
            self._lead()
        if call.error is not None:
            raise _copy(call.error) if follow else call.error
        assert call.replies is not None
        return call.replies

    def _wait(self, call: _Call) -> None:
        """Until the call is answered or it is this caller's turn to lead (bounded)."""
        if call.done.acquire(timeout=self.wait):
            return
        with self._mutex:
            if call.lead or call.replies is not None or call.error is not None:
                return  # answered (or handed the lead) just as the wait ran out
            if call in self._queue:  # never written: safe to withdraw
                self._queue.remove(call)
                reason = "was never sent"
            else:
                reason = "was sent; its outcome is unknown"
        raise redis.TimeoutError(
            f"no reply from Redis within {self.wait:.0f} s for a shared publish (it {reason})"
        )

    def _abandon(self, call: _Call) -> None:
        """The caller stops waiting: its call is withdrawn if still unsent, and a lead it was
        handed goes on to the next caller (else everyone after would wait for nobody)."""
        with self._mutex:
            if call in self._queue:
                self._queue.remove(call)
            if not call.lead:
                return
            call.lead = False
            following = self._queue[0] if self._queue else None
            if following is None:
                self._leading = False
            else:
                following.lead = True
        if following is not None:
            following.done.release()

    def _lead(self) -> None:
        """Write everything queued in one go, pass the lead on, answer every caller."""
        with self._mutex:
            batch, self._queue = self._queue, []
        try:
            self._round_trip(collections.deque(batch))
        except BaseException as exc:  # a bug or an interrupt: nobody may wait forever
            for call in batch:
                if call.replies is None and call.error is None:
                    call.error = exc
            raise
        finally:
            with self._mutex:
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._leading = False
                else:
                    following.lead = True
            # The next leader first: its write goes out (and the GIL is free while it waits
            # for Redis) while the callers answered here are still being woken one by one.
            if following is not None:
                following.done.release()
            for call in batch:
                if call.done is not None:
                    call.done.release()

    def _round_trip(self, pending: collections.deque[_Call]) -> None:
        failures = 0
        while pending:
            conn = self._connection()
            try:
                # One caller's commands as they are: a batch's are megabytes, copied once more
                # only when several callers share the write.
                packed = (
                    pending[0].packed
                    if len(pending) == 1
                    else b"".join(call.packed for call in pending)
                )
                conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
                self.round_trips += 1
                while pending:
                    call = pending[0]
                    try:
                        call.replies = read_replies(conn, call.count)
                    except redis.ResponseError as exc:
                        call.error = exc
                    pending.popleft()
            except CONNECTION_ERRORS as exc:
                conn.disconnect()  # type: ignore[no-untyped-call]
                failures += 1
                if failures > RETRIES:
                    for call in pending:
                        call.error = exc
                    return
                time.sleep(min(RETRY_CAP, RETRY_BASE * 2**failures))

    def _connection(self) -> AbstractConnection:
        """The kept connection (only the leader touches it): taken from the pool once and
        never given back, so the pool's ``disconnect()`` (on close) still reaches it."""
        if self._conn is None:
            self._conn = self._pool.get_connection()
        return self._conn

    def close(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()  # type: ignore[no-untyped-call]


def _copy(error: BaseException) -> BaseException:
    """The error for one more waiting caller: its own instance (raising one instance from
    many threads at once would mix their tracebacks), the original chained."""
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error
    return copy
