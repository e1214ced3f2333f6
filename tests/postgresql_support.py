"""The PostgreSQL broker in worker tests: a schema per test (tables, results, channels),
dropped after with everything in it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from services import require

from caraway import Celery


def server_url() -> str:
    host, port = require("postgresql")
    return f"postgresql://postgres@{host}:{port}/test"


@contextmanager
def postgresql_schema(prefix: str = "wtest") -> Iterator[tuple[str, str]]:
    """``(url, schema)``: a new schema on the test server, dropped after the block."""
    url = server_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield url, schema
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgresql_conf(url: str, schema: str, **transport: Any) -> dict[str, Any]:
    """Settings for an app whose broker and results both live in ``schema``."""
    return {
        "broker_url": url,
        "broker_transport_options": {"schema": schema, **transport},
        "result_backend": f"db+{url}",
        "database_table_schemas": {"task": schema, "group": schema},
    }


def postgresql_app(main: str, url: str, schema: str, **transport: Any) -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(postgresql_conf(url, schema, **transport))
    return app


def count_messages(url: str, schema: str) -> int:
    """Every message row left in the schema, leased or not."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".caraway_messages').fetchone()
    return int(row[0]) if row else 0


def leased_messages(url: str, schema: str) -> int:
    """Messages some consumer holds now (delivered, not yet settled)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".caraway_messages WHERE lease_owner IS NOT NULL'
        ).fetchone()
    return int(row[0]) if row else 0
