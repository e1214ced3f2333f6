"""A fetch whose reply the connection took: its messages come back at once, not in an hour.

The fetch script pops and records messages in one atomic step; if the connection drops before
its reply arrives, the messages wait in ``unacked`` under nobody's lease. The broker reads its
receipt once Redis answers again and gives them back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from proxies import TcpProxy
from services import require
from worker_support import wait_until

from caraway import Celery
from caraway.engines.registry import create_broker


@pytest.fixture
def dropper() -> Iterator[TcpProxy]:
    proxy = TcpProxy(require("redis"))
    try:
        yield proxy
    finally:
        proxy.close()


def test_a_fetch_whose_reply_is_lost_gives_its_messages_back(dropper: TcpProxy) -> None:
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
        dropper.drop_next_reply()
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
