"""RabbitMQ helpers for ``tests/worker/test_amqp_*.py``: a vhost per test module, rabbitmqctl."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import amqp
import pytest


def _load_require() -> Any:
    """``tests/services.py``'s ``require`` (``tests`` is not a package)."""
    path = Path(__file__).resolve().parent.parent / "services.py"
    spec = importlib.util.spec_from_file_location("caraway_test_services_worker_amqp", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require


require = _load_require()


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return result.stdout


@contextmanager
def rabbit_vhost(tag: str) -> Iterator[str]:
    """A fresh vhost on the shared server (deleted after, with all in it); yields its URL."""
    host, port = require("rabbitmq")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot create a test vhost")
    name = f"caraway-test-{tag}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{host}:{port}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


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
