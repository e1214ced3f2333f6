"""SQL result backends for the contract suite: PostgreSQL, MariaDB, and SQLite via SQLAlchemy.

Each test gets its own task and group tables (``database_table_names``), dropped afterwards;
the sequences and the chord counter table are shared, as they would be in production.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from services import require

from caraway.engines.sql.backend import sqlalchemy_url

SERVERS = {
    "postgresql": "db+postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "db+mysql://root@127.0.0.1:3306/test",
    # Celery's spelling with the driver its guides name: SQLAlchemy's psycopg2 dialect.
    "postgresql-psycopg2": "db+postgresql+psycopg2://postgres@127.0.0.1:5432/test",
}


@contextmanager
def sql_database(kind: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(url, conf)`` for one test: the server (or a SQLite file) and unique table names."""
    if kind == "sqlalchemy-sqlite":
        url = f"db+sqlite:///{tmp_path}/results.sqlite3"
    else:
        require(kind.partition("-")[0])
        url = SERVERS[kind]
    suffix = uuid.uuid4().hex[:12]
    names = {"task": f"taskmeta_{suffix}", "group": f"tasksetmeta_{suffix}"}
    try:
        yield url, {"database_table_names": names}
    finally:
        if kind != "sqlalchemy-sqlite":
            _drop(url, names.values())


def _drop(url: str, tables: Any) -> None:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


def _factory(kind: str) -> Any:
    @contextmanager
    def factory(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        with sql_database(kind, tmp_path) as (url, conf):
            yield url, {}, conf

    return factory


BACKENDS = {kind: _factory(kind) for kind in (*SERVERS, "sqlalchemy-sqlite")}
