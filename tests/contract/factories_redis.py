"""Redis engines for the contract suites: each test gets its own key prefix, deleted after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import require


def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (SCAN MATCH, never KEYS on a shared server)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@contextmanager
def redis_engine(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    host, port = require("redis")
    url = f"redis://{host}:{port}/0"
    prefix = f"contract-{uuid.uuid4().hex[:12]}:"
    try:
        yield url, {"global_keyprefix": prefix, "visibility_timeout": 2}
    finally:
        delete_prefixed(url, prefix)


BROKERS = {"redis": redis_engine}
BACKENDS = {"redis": redis_engine}
