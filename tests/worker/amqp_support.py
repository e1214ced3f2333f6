"""RabbitMQ helpers for ``tests/worker/test_amqp_*.py``: a vhost per test module, rabbitmqctl,
a proxy that cuts connections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
from services import rabbitmq_vhost, rabbitmqctl


@contextmanager
def rabbit_vhost(tag: str) -> Iterator[str]:
    """A fresh vhost on the shared server (deleted after, with all in it); yields its URL."""
    with rabbitmq_vhost(f"caraway-test-{tag}") as url:
        yield url


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def table(vhost: str, what: str, *columns: str) -> list[dict[str, str]]:
    """``rabbitmqctl list_<what>`` rows as dicts (``-q`` omits the header)."""
    out = rabbitmqctl(f"list_{what}", "-p", vhost, "--no-table-headers", *columns)
    return [dict(zip(columns, line.split("\t"), strict=True)) for line in out.splitlines()]


@contextmanager
def raw_channel(url: str) -> Iterator[Any]:
    """A plain py-amqp channel on the vhost, to look at the wire as a foreign client would."""
    conn = amqp.Connection(
        host=url.split("@")[1].split("/")[0], userid="guest", password="guest",
        virtual_host=vhost_of(url),
    )  # fmt: skip
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()
