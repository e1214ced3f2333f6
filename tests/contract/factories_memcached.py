"""memcached for the backend contract suite: one private server for the session; the tests'
keys are fresh uuids, so they need no prefix of their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from private_memcached import session_memcached


@contextmanager
def memcached_backend(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield session_memcached().url, {}


BACKENDS = {"memcached": memcached_backend}
