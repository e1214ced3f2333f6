"""Real services the tests talk to: probe them, skip on a laptop without them, fail in CI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "postgresql": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
}


def require(name: str) -> tuple[str, int]:
    """The service's address; missing is a failure under ``CI=true``, else a skip."""
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return host, port
    except OSError as exc:
        missing(f"{name} is not reachable at {host}:{port} ({exc}); start it (see README)")


def missing(message: str) -> NoReturn:
    """Skip the test on a laptop; fail it in CI, where every service must be there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def create_vhost(prefix: str) -> str:
    """A new RabbitMQ vhost that guest may use fully; its name starts with ``prefix``."""
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl is not installed: cannot create a test vhost")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


@contextmanager
def rabbitmq_vhost(prefix: str) -> Iterator[str]:
    """The AMQP URL of a vhost made for the block and deleted after, with all in it."""
    host, port = require("rabbitmq")
    name = create_vhost(prefix)
    try:
        yield f"amqp://guest:guest@{host}:{port}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@contextmanager
def postgresql_database(prefix: str) -> Iterator[str]:
    """The name of a PostgreSQL database made for the block (owner ``postgres``, on the test
    server) and dropped after, with whatever connections are still open to it."""
    import psycopg  # Lazy: only the tests that need a database of their own import the driver.

    host, port = require("postgresql")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    dsn = f"host={host} port={port} user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: The golden captures of real Celery traffic, copied from the team's wire spec
#: (``shared/spec/captures``); ``tools/sync-captures`` (or ``tools/sync-spec``) refreshes the copy.
CAPTURES = Path(__file__).resolve().parent / "data" / "celery-captures"


def free_port() -> int:
    """A TCP port nobody listens on now (the usual bind-to-0 trick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def captures_dir() -> Path:
    """The golden captures of real Celery traffic, kept in the repository."""
    return CAPTURES


def delete_redis_prefixed(prefix: str, dbs: tuple[int, ...] = (0, 1)) -> None:
    """Delete a test's keys (all starting with ``prefix``) from databases ``dbs`` of the
    shared Redis."""
    import redis  # Lazy: tests without Redis import this module too.

    host, port = SERVICES["redis"]
    for db in dbs:
        client = redis.Redis(host=host, port=port, db=db)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
