"""RabbitMQ for the broker contract suite: one vhost for the session, deleted at exit.

Each test already uses its own queue names; the vhost keeps them off the shared server's
``/`` and goes away with everything in it (a vhost per test would cost ~2 s of rabbitmqctl).
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import create_vhost, rabbitmqctl, require

_session_vhost: list[str] = []


def _vhost() -> str:
    if not _session_vhost:
        name = create_vhost("caraway-test-contract")
        atexit.register(rabbitmqctl, "delete_vhost", name)
        _session_vhost.append(name)
    return _session_vhost[0]


@contextmanager
def amqp_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    host, port = require("rabbitmq")
    # Every queue priority-enabled, so the priority contract holds on fresh queue names.
    yield f"amqp://guest:guest@{host}:{port}/{_vhost()}", {"queue_max_priority": 10}


BROKERS = {"amqp": amqp_broker}
