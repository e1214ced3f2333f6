"""Redis engines for the contract suites: each test gets its own key prefix, deleted after."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _load_require() -> Callable[[str], tuple[str, int]]:
    """``tests/services.py``'s ``require`` (this file is loaded by path, not as a package)."""
    path = Path(__file__).resolve().parent.parent / "services.py"
    spec = importlib.util.spec_from_file_location("caraway_test_services", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require  # type: ignore[no-any-return]


require = _load_require()


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
