"""A fetch whose reply the connection took: its messages come back at once, not in an hour.

The fetch script pops and records messages in one atomic step; if the connection drops before
its reply arrives, the messages wait in ``unacked`` under nobody's lease. The broker reads its
receipt once Redis answers again and gives them back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from services import require
from worker_support import wait_until

from caraway import Celery
from caraway.engines.registry import create_broker


class ReplyDropper:
    """A TCP proxy to Redis that, once armed, cuts the connection instead of passing the next
    reply on: the command ran on the server, its answer never arrives."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.armed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropper() -> Iterator[ReplyDropper]:
    proxy = ReplyDropper(require("redis"))
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_fetch_whose_reply_is_lost_gives_its_messages_back(dropper: ReplyDropper) -> None:
    host, port = require("redis")
    prefix = f"receipt-{uuid.uuid4().hex[:8]}:"
    options = {"global_keyprefix": prefix}
    app = Celery(
        "receipt", broker=f"redis://{host}:{port}/5",
        broker_transport_options=options, set_as_current=False,
    )  # fmt: skip
    raw = redis.Redis(host=host, port=port, db=5)
    broker = create_broker(f"redis://127.0.0.1:{dropper.port}/5", options)
    try:
        assert broker.fetch(["celery"], 3, 0.05) == []  # connected, scripts loaded
        ids = [app.send_task("receipt.task").id for _ in range(3)]

        # The fetch script runs, its reply is cut off; the client sends it again, which finds
        # the queue empty: without the receipt the three would wait for the visibility timeout.
        dropper.armed.set()
        assert broker.fetch(["celery"], 3, 0.2) == []
        assert raw.hlen(f"{prefix}unacked") == 0
        assert raw.llen(f"{prefix}celery") == 3  # given back at once

        again = broker.fetch(["celery"], 3, 1.0)
        assert sorted(d.message.task_id for d in again) == sorted(ids)
        assert all(d.redelivered for d in again)
        broker.ack([d.tag for d in again])  # pipelined: it lands a moment later
        wait_until(lambda: raw.hlen(f"{prefix}unacked") == 0, what="the acks")
    finally:
        broker.close()
        app.close()
        keys = raw.keys(f"{prefix}*")
        if keys:
            raw.delete(*keys)
