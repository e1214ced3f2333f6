"""The PostgreSQL broker for the contract suites: each test gets its own schema, dropped after
with everything in it (tables, and so the channels named after it go quiet)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import require


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def postgresql_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    host, port = require("postgresql")
    url = f"postgresql://postgres@{host}:{port}/test"
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    try:
        # heartbeat 1 s: the orphan test's survivor looks again within its 5 s.
        yield url, {"schema": schema, "visibility_timeout": 1, "heartbeat": 1}
    finally:
        drop_schema(url, schema)


BROKERS = {"postgresql": postgresql_broker}
